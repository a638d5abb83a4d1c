"""Trained models that ship with tinyunet (checkpoint.load_model, predict.py --model NAME):

    isbi2012    the cpu recipe (--preset cpu) trained on all 30 ISBI 2012 training slices, as
                the paper trained its submission; provenance in isbi2012.json
"""
