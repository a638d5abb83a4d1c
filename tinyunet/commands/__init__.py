"""The command-line programs, each a thin layer over the library: argument parsing and the report.

    train      train a U-Net, or resume a run         (examples/train_isbi.py)
    predict    segment images, stacks and volumes     (examples/predict.py)
    evaluate   the ISBI challenge's scores of a stack  (examples/evaluate.py)

Each module has `main(argv)`, run through cli.run_cli: a mistake in the input is one line
`error: ...` and exit status 2.
"""
