"""The command-line programs, each a thin layer over the library: argument parsing and the report.

    train      train a U-Net, or resume a run         (examples/train_isbi.py)
    predict    segment images, stacks and volumes     (examples/predict.py)
    evaluate   the challenges' scores of a stack       (examples/evaluate.py)
    export     ONNX, TorchScript, bioimage.io package  (tinyunet export)
    ship       a finished run as a model, by name      (tinyunet ship)

    cli        what they share: argument types, the device, one `error:` line for a mistake

Each module has `main(argv)`, run through cli.run_cli: a mistake in the input is one line
`error: ...` and exit status 2.
"""
