"""The tinyunet console command: `tinyunet train|predict|evaluate|export|ship ...` (also
`python -m tinyunet ...`), the same programs with the same options as the scripts in
examples/."""
import sys

from .commands.cli import run_cli

COMMANDS = ("train", "predict", "evaluate", "export", "ship")
USAGE = ("usage: tinyunet {train,predict,evaluate,export,ship} ...\n\n"
         "  train     train a U-Net, or resume a run (examples/train_isbi.py)\n"
         "  predict   segment images, stacks, folders of frames and volumes\n"
         "  evaluate  the ISBI scores of a probability stack, or SEG of predicted cells\n"
         "  export    ONNX, TorchScript or a BioImage Model Zoo package of a checkpoint\n"
         "  ship      a finished run's last checkpoint as a model, with its provenance\n\n"
         "tinyunet COMMAND --help shows a command's options.")


def main(argv=None):
    import importlib
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}: valid commands are {', '.join(COMMANDS)} "
              f"(tinyunet --help)", file=sys.stderr)
        return 2
    command = importlib.import_module(f"tinyunet.commands.{argv[0]}")
    command.PROG = f"tinyunet {argv[0]}"              # how its messages say to run it again
    run_cli(command.main, argv[1:])             # its result is for Python callers, not a status
    return 0


if __name__ == "__main__":
    sys.exit(main())
