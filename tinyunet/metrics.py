"""The ISBI 2012 challenge's metrics, on a cell probability map against binary ground truth.

Foreground = cell interior (ISBI label 255, class 1). For each slice, the probability map is
thresholded at 0.0, 0.1, ..., 0.9 (a pixel is foreground where p > t) and the best score over the
thresholds is kept, as the challenge did:

- pixel error = 1 - max_t F1(thresholded map, ground truth), the pixel-wise F-score;
- Rand error  = 1 - max_t foreground-restricted Rand F-score (Arganda-Carreras et al. 2015):
  segments are the 4-connected components of the ground-truth foreground and of the thresholded
  prediction; only pixels inside the ground-truth foreground count; a pixel predicted as
  background there is a segment of its own (a singleton). With n_ij the number of pixels in
  ground-truth segment i and predicted segment j, s_i and t_j the row and column sums:

      precision = sum n_ij^2 / sum t_j^2,  recall = sum n_ij^2 / sum s_i^2,
      F = 2 sum n_ij^2 / (sum s_i^2 + sum t_j^2)

  (skimage.metrics.adapted_rand_error treats all predicted-background pixels as one segment
  instead, and disagrees);
- IoU (Jaccard) of the map thresholded at 0.5 against the ground-truth foreground.
"""
import numpy as np
from scipy import ndimage as ndi

THRESHOLDS = tuple(np.round(np.arange(0.0, 1.0, 0.1), 1))
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _check(prob, truth):
    prob, truth = np.asarray(prob), np.asarray(truth)
    if prob.shape != truth.shape or prob.ndim != 2:
        raise ValueError(f"probability map {prob.shape} and ground truth {truth.shape} must be "
                         "2-D images of one shape")
    return prob, truth.astype(bool)


def f1_score(pred, truth):
    """Pixel F-score of binary prediction against binary truth (1.0 when both are empty)."""
    tp = np.count_nonzero(pred & truth)
    denom = np.count_nonzero(pred) + np.count_nonzero(truth)
    return 1.0 if denom == 0 else 2.0 * tp / denom


def rand_fscore(pred, truth):
    """Foreground-restricted Rand F-score of a binary prediction against binary truth."""
    gt_seg, _ = ndi.label(truth, structure=_FOUR)
    pr_seg, _ = ndi.label(pred, structure=_FOUR)
    inside = gt_seg > 0
    if not inside.any():
        return 1.0
    g, p = gt_seg[inside], pr_seg[inside]
    singles = p == 0                               # predicted background: one segment each
    # contingency counts of the non-singleton pairs (i, j), from one integer key per pixel
    keys = g[~singles].astype(np.int64) * (int(p.max()) + 1) + p[~singles]
    n_ij = np.unique(keys, return_counts=True)[1].astype(np.float64)
    t_j = np.unique(p[~singles], return_counts=True)[1].astype(np.float64)
    s_i = np.unique(g, return_counts=True)[1].astype(np.float64)
    n_singles = float(singles.sum())               # each adds 1 to sum n_ij^2 and to sum t_j^2
    sum_n2 = (n_ij ** 2).sum() + n_singles
    return 2.0 * sum_n2 / ((s_i ** 2).sum() + (t_j ** 2).sum() + n_singles)


def iou(pred, truth):
    """Jaccard index |pred & truth| / |pred | truth| (1.0 when both are empty)."""
    union = np.count_nonzero(pred | truth)
    return 1.0 if union == 0 else np.count_nonzero(pred & truth) / union


def slice_metrics(prob, truth, thresholds=THRESHOLDS):
    """Pixel error, Rand error (best over thresholds) and IoU at 0.5 for one slice."""
    prob, truth = _check(prob, truth)
    f1 = max(f1_score(prob > t, truth) for t in thresholds)
    rf = max(rand_fscore(prob > t, truth) for t in thresholds)
    return {"pixel_error": float(1.0 - f1), "rand_error": float(1.0 - rf),
            "iou": float(iou(prob > 0.5, truth))}


def evaluate(probs, truths, thresholds=THRESHOLDS):
    """Metrics per slice and their mean: probs and truths (N, H, W) or lists of 2-D arrays.

    truths: booleans, classes (1 = cell) or ISBI labels (255 = cell). Returns
    {"pixel_error", "rand_error", "iou"} means plus "per_slice": a list of dicts.
    """
    per = [slice_metrics(p, np.asarray(t) > 0, thresholds) for p, t in zip(probs, truths)]
    if not per:
        raise ValueError("evaluate: no slices given")
    out = {k: float(np.mean([m[k] for m in per])) for k in per[0]}
    out["per_slice"] = per
    return out
