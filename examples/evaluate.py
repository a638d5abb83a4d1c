"""Score a probability stack against ground-truth labels with the ISBI 2012 challenge's metrics,
or predicted cells against reference masks with the cell tracking challenge's SEG.

    python examples/evaluate.py predictions/volume_prob.tif ../shared/data/isbi2012/train-labels.tif --slices 25-29
    python examples/evaluate.py probs_folder/ labels.tif --json
    python examples/evaluate.py --seg predictions/ ../shared/data/ctc/DIC-C2DH-HeLa/01_GT/SEG

`python examples/evaluate.py --help` lists the options. The options, the checks of every argument
and the report are in tinyunet/commands/evaluate.py; the work is the library's.
"""
from tinyunet.commands.cli import run_cli
from tinyunet.commands.evaluate import main

if __name__ == "__main__":
    run_cli(main)
