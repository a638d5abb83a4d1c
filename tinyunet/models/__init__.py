"""Trained models that ship with tinyunet (checkpoint.load_model, predict.py --model NAME):

    isbi2012    the cpu recipe (--preset cpu, averaged weights) on half its schedule, 9000
                steps, trained on ISBI 2012 slices 0-24: its last checkpoint, chosen on
                nothing; slices 25-29, which it never saw, give its scores. Provenance (the
                command, the commit, the scores) in isbi2012.json
"""
