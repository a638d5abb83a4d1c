"""Train a U-Net on membranes (ISBI 2012, the built-in synthetic EM set) or on touching cells
(cell tracking challenge sets, instance masks) and report the challenge's metrics.

    python examples/train_isbi.py                                   # synthetic data, tiny preset
    python examples/train_isbi.py --data isbi --preset cpu          # $TINYUNET_ISBI_DIR
    python examples/train_isbi.py --data ../shared/data/isbi2012 --preset paper --device gpu
    python examples/train_isbi.py --data ../shared/data/ctc/DIC-C2DH-HeLa   # cells preset
    python examples/train_isbi.py --data my_pairs --train-slices 0-7 --val-slices 8,9
    python examples/train_isbi.py --resume runs/20261121-180000-cpu     # continue a run
    python examples/train_isbi.py --data my_cells --init isbi2012 --steps 1000   # fine-tune

`python examples/train_isbi.py --help` lists the options. The options, the checks of every argument
and the report are in tinyunet/commands/train.py; the work is the library's.
"""
from tinyunet.commands.cli import run_cli
from tinyunet.commands.train import main

if __name__ == "__main__":
    run_cli(main)
