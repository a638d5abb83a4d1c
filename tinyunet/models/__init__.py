"""Trained models that ship with tinyunet (checkpoint.load_model, predict.py --model NAME):

    isbi2012    the cpu recipe (--preset cpu, averaged weights) on half its schedule, 9000
                steps, trained on ISBI 2012 slices 0-24: its last checkpoint, chosen on
                nothing; slices 25-29, which it never saw, give its scores. Provenance (the
                command, the commit, the scores) in isbi2012.json
    dic-hela    the cells recipe (--preset cells, averaged weights, 10000 steps) on the cell
    phc-u373    tracking challenge's DIC-HeLa 01 / PhC-U373 02, their reference masks and
                silver truth (--silver) outside a block of frames held out of training
                (36-57 / 77-114): its last checkpoint, chosen on nothing; the block's
                reference frames give its scores. predict --instances makes cells with the
                run's rule (the card's "instances": threshold 0.7, min_cell 100, border 2)
"""
