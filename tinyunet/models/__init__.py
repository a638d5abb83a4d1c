"""Trained models that ship with tinyunet (checkpoint.load_model, predict.py --model NAME):

    isbi2012    the cpu recipe (--preset cpu, averaged weights) on its whole schedule, 18000
                steps (seed 1), trained on ISBI 2012 slices 0-24: its last checkpoint, chosen on
                nothing; slices 25-29, which it never saw, give its scores. Provenance (the
                command, the commit, the scores) in isbi2012.json
    dic-hela    the cells recipe (--preset cells, averaged weights; 10000 steps, 15000 for
    phc-u373    phc-u373) on the cell tracking challenge's DIC-HeLa 01 / PhC-U373 02, their
                reference masks and silver truth (--silver) outside a block of frames held
                out of training (36-57 / 77-114): its last checkpoint, chosen on nothing; the
                block's reference frames give its scores. predict --instances makes cells with
                the card's rule ("instances": min_cell 100, border 2, and the threshold that
                tinyunet ship --threshold silver chose on the block's silver truth: 0.7 for
                dic-hela, 0.85 for phc-u373)
"""
