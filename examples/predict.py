"""Segment an image, a stack or a whole volume with a trained checkpoint: P(cell) per pixel.

    python examples/predict.py --model isbi2012 ../shared/data/isbi2012/test-volume.tif
    python examples/predict.py runs/<run>/best.npz ../shared/data/isbi2012/test-volume.tif --tta
    python examples/predict.py best.npz image.png --out pred --tile 572 --device gpu
    python examples/predict.py runs/<cells run>/best.npz ../shared/data/ctc/DIC-C2DH-HeLa/01 --instances
    python examples/predict.py best.npz volume.zarr                     # blockwise, with dask
    python examples/predict.py best.npz volume.zarr --scheduler tcp://10.0.0.5:8786 --chunk 1,1024,1024

`python examples/predict.py --help` lists the options. The options, the checks of every argument
and the report are in tinyunet/commands/predict.py; the work is the library's.
"""
from tinyunet.commands.cli import run_cli
from tinyunet.commands.predict import main

if __name__ == "__main__":
    run_cli(main)
