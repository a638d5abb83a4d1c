"""How good a segmentation is, in the two challenges of the paper:

    isbi    the ISBI 2012 EM challenge's scores of a cell probability map against binary ground
            truth, as Fiji computes them: pixel, Rand and warping error, IoU, V_rand, V_info
            (`evaluate` scores a stack; its docstring says how each is defined)
    cells   the cell tracking challenge's SEG of instance labels, with F1 and AP at IoU 0.5
            (`seg`), and the cells merged and split (`merged_and_split_cells`)

Every name of both modules is here too: tinyunet.metrics.evaluate, tinyunet.metrics.seg.
"""
from .cells import merged_and_split_cells, seg
from .isbi import (THINNED_THRESHOLDS, THRESHOLDS, evaluate, f1_score, info_fscore, iou,
                   java_range, merges_and_splits, rand_fscore, slice_metrics, thinned_scores,
                   warp_ground_truth, warping_error)

__all__ = ["THINNED_THRESHOLDS", "THRESHOLDS", "evaluate", "f1_score", "info_fscore", "iou",
           "java_range", "merged_and_split_cells", "merges_and_splits", "rand_fscore", "seg",
           "slice_metrics", "thinned_scores", "warp_ground_truth", "warping_error"]
