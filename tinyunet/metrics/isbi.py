"""The ISBI 2012 challenge's metrics, on a cell probability map against binary ground truth.

Foreground = cell interior (ISBI label 255, class 1); the probability map is P(cell). Every
score thresholds the map (a pixel is foreground where p > t) at a range of thresholds and keeps
the best, as the challenge did with Fiji's Trainable Segmentation library
(github.com/fiji/Trainable_Segmentation, src/main/java/trainableSegmentation/metrics/). Below,
"Fiji" means that code; definitions were read from it, the code here is our own.

The paper's table (warping, Rand and pixel error; the challenge's original ranking):

- pixel error = 1 - max_t F1, the pixel-wise F-score (PixelError.getPixelErrorMaximalFScore);
- Rand error  = 1 - max_t foreground-restricted Rand F-score (RandError.
  getForegroundRestrictedRandIndexMaximalFScore): segments are the 4-connected components of
  the ground-truth foreground and of the thresholded prediction; only pixels inside the
  ground-truth foreground count; a pixel predicted as background there is a segment of its own
  (a singleton). With n_ij the number of pixels in ground-truth segment i and predicted segment
  j, s_i and t_j the row and column sums:

      precision = sum n_ij^2 / sum t_j^2,  recall = sum n_ij^2 / sum s_i^2,
      F = 2 sum n_ij^2 / (sum s_i^2 + sum t_j^2)

  (skimage.metrics.adapted_rand_error treats all predicted-background pixels as one segment
  instead, and disagrees);
- warping error (Jain et al., CVPR 2010; WarpingError.getMinimumSplitsAndMergersErrorValue,
  the "minimum splits and mergers warping error" of the challenge): the ground truth is warped
  toward the thresholded prediction by flipping simple pixels only, and the mismatches that
  remain are topological errors; the challenge counted the pixels of the splits and mergers
  among them, over the number of pixels. What Fiji's simplePointWarp2d does, and so do we
  (`warp_ground_truth`, kernels/warping.py):
    * binarise: ground truth > 0, prediction p > t; one background pixel of padding all round;
    * simple point: T4(foreground) == 1 and T8(background) == 1 among the 8 neighbours
      (foreground 4-connected, background 8-connected). Fiji tests simplicity with a 3-D
      characterisation (simple2DBertrand(patch, 4): the patch in the middle plane of a 3x3x3
      cube, 6-connected foreground); on all 512 3x3 patches it answers as this 2-D test does;
    * order: in each pass the mismatches are listed column by column (x outer, y inner), then
      stably sorted by |p - t| in decreasing order (the prediction's most confident pixels
      first; fixed, not random), and visited in that order, each simple one flipped at once;
    * passes repeat until one flips nothing; warping error (classic) = remaining mismatches /
      (H W); Fiji's getMetricValue(t) averages that over the slices;
    * kinds (classifyMismatches2d, whole image, no radius): from the 4-connected components of
      the warped ground truth seen in the 8 neighbours of each remaining mismatch (see
      kernels.warping.classify): merge, split, hole addition/deletion, object
      addition/deletion. The challenge's number counts merge + split pixels (not clustered)
      summed over the stack, / (N H W), minimised over t = 0.0, 0.1, ..., 0.9;
- IoU (Jaccard) of the map thresholded at 0.5 against the ground-truth foreground.

The challenge's final ranking (Arganda-Carreras et al., Front. Neuroanat. 2015; Fiji's script
"Segmentation evaluation after border thinning": RandError.getMaximalVRandAfterThinning(0.0,
1.0, 0.1, true), VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0, 0.1)):

- V_rand: the foreground-restricted Rand F-score above, after thinning the predicted borders to
  one-pixel lines (kernels.thinning: a watershed from the predicted cells; line pixels are
  singletons);
- V_info: the information-theoretic analogue on the same thinned segmentation, with p_ij =
  n_ij / n (n = ground-truth foreground pixels, singletons as above): H(A) and H(B) the
  entropies of the ground-truth and predicted segment sizes, I = H(A) + H(B) - H(A, B), and
  V_info = 2 I / (H(A) + H(B)) (precision I / H(A), recall I / H(B)); 0 when H(A) or H(B) is 0,
  as in Fiji. Natural logarithms (the ratio does not depend on the base).
  Both are higher-is-better, averaged over the slices per threshold, best over the thresholds
  0.0, 0.1, ..., 1.0 (the eleven values Fiji's loop `th <= 1.0; th += 0.1` visits; its last is
  0.9999999999999999, kept here as such).

How a stack is scored, as Fiji does: one threshold for the whole stack per metric, the one that
gives the best stack score. Pixel and Rand F-scores are micro-averaged (true/false positive
counts of pixels, or of pixel pairs, summed over the slices before F is formed); the warping
error sums pixels over the slices; V_rand and V_info average the per-slice scores. The
thresholds for the pixel and Rand errors of the 2012 challenge are not recorded in Fiji's code;
we use 0.0, 0.1, ..., 0.9 as for the warping error. A slice with no ground-truth foreground
scores 1 (Rand, V_rand, V_info); Fiji would divide by zero there.
"""
import numpy as np
from scipy import ndimage as ndi

from ..kernels.thinning import thin_borders
from ..kernels.warping import KINDS, MERGE, SIMPLE, SPLIT, classify, warp


def java_range(lo, hi, step):
    """The thresholds of Fiji's loop `for (th = lo; th <= hi; th += step)`, float for float."""
    out, t = [], lo
    while t <= hi:
        out.append(t)
        t += step
    return tuple(out)


THRESHOLDS = tuple(np.round(np.arange(0.0, 1.0, 0.1), 1))     # pixel, Rand and warping error
THINNED_THRESHOLDS = java_range(0.0, 1.0, 0.1)                # V_rand, V_info: 11 values
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _check(prob, truth, what="probability map"):
    prob, truth = np.asarray(prob), np.asarray(truth)
    if prob.shape != truth.shape or prob.ndim != 2:
        raise ValueError(f"{what} {prob.shape} and ground truth {truth.shape} must be "
                         "2-D images of one shape")
    return prob, truth.astype(bool)


def f1_score(pred, truth):
    """Pixel F-score of binary prediction against binary truth (1.0 when both are empty)."""
    tp = np.count_nonzero(pred & truth)
    denom = np.count_nonzero(pred) + np.count_nonzero(truth)
    return 1.0 if denom == 0 else 2.0 * tp / denom


def _contingency(gt_seg, pr_seg):
    """Counts inside the ground-truth foreground (gt_seg > 0): n_ij of the pairs (gt segment i,
    predicted segment j > 0), s_i, t_j, and the number of singletons (pr_seg == 0)."""
    inside = gt_seg > 0
    g, p = gt_seg[inside], pr_seg[inside]
    singles = p == 0                               # predicted background: one segment each
    # contingency counts of the non-singleton pairs (i, j), from one integer key per pixel
    keys = g[~singles].astype(np.int64) * (int(p.max(initial=0)) + 1) + p[~singles]
    n_ij = np.unique(keys, return_counts=True)[1].astype(np.float64)
    t_j = np.unique(p[~singles], return_counts=True)[1].astype(np.float64)
    s_i = np.unique(g, return_counts=True)[1].astype(np.float64)
    return n_ij, s_i, t_j, float(singles.sum())


def _rand_sums(gt_seg, pr_seg):
    """(sum n_ij^2, sum s_i^2, sum t_j^2), singletons included: the pair counts (true
    positives, true + false negatives, true + false positives) of the foreground-restricted
    Rand F-score. Each singleton adds 1 to sum n_ij^2 and to sum t_j^2."""
    n_ij, s_i, t_j, n_singles = _contingency(gt_seg, pr_seg)
    return ((n_ij ** 2).sum() + n_singles, (s_i ** 2).sum(), (t_j ** 2).sum() + n_singles)


def _rand_f(sums):
    both, gt, pr = sums
    return 1.0 if gt + pr == 0 else 2.0 * both / (gt + pr)


def rand_fscore(pred, truth):
    """Foreground-restricted Rand F-score of a binary prediction against binary truth (one
    2-D slice; a stack is refused, not scored as a volume)."""
    pred, truth = _check(pred, truth, "prediction")
    gt_seg, _ = ndi.label(truth, structure=_FOUR)
    pr_seg, _ = ndi.label(pred, structure=_FOUR)
    return _rand_f(_rand_sums(gt_seg, pr_seg))


def info_fscore(gt_seg, pr_seg):
    """Foreground-restricted information-theoretic score 2 I / (H(A) + H(B)) of a predicted
    segmentation pr_seg (0 = singletons) against ground-truth segments gt_seg (0 = outside)."""
    n_ij, s_i, t_j, n_singles = _contingency(gt_seg, pr_seg)
    n = s_i.sum()
    if n == 0:
        return 1.0
    plogp = lambda c: float(((c / n) * np.log(c / n)).sum())
    single = n_singles / n * np.log(n)             # n_singles segments of probability 1 / n
    h_a = -plogp(s_i)
    h_b = -plogp(t_j) + single
    h_ab = -plogp(n_ij) + single
    if h_a == 0 or h_b == 0:                       # Fiji: precision or recall 0, F = 0
        return 0.0
    return max(0.0, 2.0 * (h_a + h_b - h_ab) / (h_a + h_b))


def thinned_scores(prob, truth, threshold):
    """(V_rand, V_info) of one slice at one threshold, after thinning the predicted borders."""
    prob, truth = _check(prob, truth)
    gt_seg, _ = ndi.label(truth, structure=_FOUR)
    pr_seg = thin_borders(prob > threshold)
    return float(_rand_f(_rand_sums(gt_seg, pr_seg))), float(info_fscore(gt_seg, pr_seg))


def merges_and_splits(pred, truth, min_pixels=20):
    """Where a binary prediction merges or splits the ground truth's cells (4-connected
    components of the foreground), as the foreground-restricted Rand error sees them.

    A predicted cell that overlaps two or more true cells, each by at least `min_pixels`
    pixels, merges them; a true cell overlapped by two or more predicted cells (each by at
    least `min_pixels`) is split. Returns a dict: "merged" and "split" (boolean masks of the
    true cells concerned), "merges" (the number of predicted cells that merge) and "splits"
    (the number of true cells split). min_pixels ignores the slivers that every boundary
    disagreement makes. One 2-D slice; a stack is refused.
    """
    pred, truth = _check(pred, truth, "prediction")
    gt_seg, _ = ndi.label(truth, structure=_FOUR)
    pr_seg, _ = ndi.label(np.asarray(pred, bool), structure=_FOUR)
    both = (gt_seg > 0) & (pr_seg > 0)
    pairs, counts = np.unique(np.stack([gt_seg[both], pr_seg[both]]), axis=1,
                              return_counts=True)
    g, p = pairs[:, counts >= min_pixels]           # (true cell, predicted cell) overlaps
    pr_ids, per_pr = np.unique(p, return_counts=True)
    gt_ids, per_gt = np.unique(g, return_counts=True)
    merging = pr_ids[per_pr >= 2]                  # predicted cells touching 2+ true cells
    merged_gt = np.unique(g[np.isin(p, merging)])
    split_gt = gt_ids[per_gt >= 2]
    return dict(merged=np.isin(gt_seg, merged_gt) & (gt_seg > 0),
                split=np.isin(gt_seg, split_gt) & (gt_seg > 0),
                merges=int(len(merging)), splits=int(len(split_gt)))


def iou(pred, truth):
    """Jaccard index |pred & truth| / |pred | truth| (1.0 when both are empty)."""
    union = np.count_nonzero(pred | truth)
    return 1.0 if union == 0 else np.count_nonzero(pred & truth) / union


def warp_ground_truth(prob, truth, threshold=0.5, max_passes=None):
    """Warp the ground truth toward the prediction prob > threshold by flipping simple pixels.

    Returns (warped, mismatches, kinds): warped bool (H, W); mismatches int64 (M, 2), the (row,
    col) of the pixels where warped and prediction still differ; kinds int64 (M,), indices into
    kernels.warping.KINDS ("merge", "split", ...). Visiting order: see the module docstring.
    max_passes: stop early (for figures of the warp step by step; the kinds then describe
    pixels that may still be flippable).
    """
    prob, truth = _check(prob, truth)
    h, w = truth.shape
    pred = prob > threshold
    # mismatches column by column (x outer, y inner), then stably by confidence |p - t|,
    # largest first; |p - t| is rounded to float32 as Fiji stores it, so ties fall the same way
    cols, rows = np.nonzero((truth != pred).T)
    p32 = prob.astype(np.float32).astype(np.float64)
    key = np.abs(p32[rows, cols] - threshold).astype(np.float32)
    order = np.argsort(-key, kind="stable")
    source = np.zeros((h + 2, w + 2), np.uint8)
    source[1:-1, 1:-1] = truth
    left = warp(source, rows[order] + 1, cols[order] + 1, SIMPLE,
                -1 if max_passes is None else int(max_passes))
    warped = np.ascontiguousarray(source[1:-1, 1:-1])
    rem_rows, rem_cols = rows[order][left], cols[order][left]
    comp, _ = ndi.label(warped, structure=_FOUR)
    kinds = classify(warped, comp.astype(np.int32), rem_rows, rem_cols)
    return warped.astype(bool), np.stack([rem_rows, rem_cols], axis=1), kinds


def warping_error(prob, truth, threshold=0.5):
    """Warping error of one slice at one threshold: a dict with
    "warping_error": split + merge pixels / (H W), the challenge's number;
    "warping_error_all": all remaining mismatches / (H W), Jain et al.'s classic one;
    and the pixel count of each kind ("merge", "split", "hole_addition", ...)."""
    _, _, kinds = warp_ground_truth(prob, truth, threshold)
    size = float(np.asarray(truth).size)
    counts = np.bincount(kinds, minlength=len(KINDS))
    out = {"warping_error": float(counts[MERGE] + counts[SPLIT]) / size,
           "warping_error_all": len(kinds) / size}
    out.update({k: int(c) for k, c in zip(KINDS, counts)})
    return out


def slice_metrics(prob, truth, thresholds=THRESHOLDS):
    """Pixel error, Rand error (best over thresholds) and IoU at 0.5 for one slice."""
    prob, truth = _check(prob, truth)
    f1 = max(f1_score(prob > t, truth) for t in thresholds)
    rf = max(rand_fscore(prob > t, truth) for t in thresholds)
    return {"pixel_error": float(1.0 - f1), "rand_error": float(1.0 - rf),
            "iou": float(iou(prob > 0.5, truth))}


def evaluate(probs, truths, thresholds=THRESHOLDS, topology=True):
    """The challenge's scores of a stack: probs and truths (N, H, W) or lists of 2-D arrays.

    truths: booleans, classes (1 = cell) or ISBI labels (255 = cell). topology=False skips the
    warping error, V_rand and V_info (the slow part). Each metric takes the one threshold that
    scores the stack best (see the module docstring). Returns the stack's "pixel_error",
    "rand_error", "iou" and, with topology, "warping_error", "warping_error_all", "v_rand",
    "v_info" and "warping_counts" (pixels of each kind, summed over the slices); "thresholds":
    the threshold each metric chose; "per_slice": a list of dicts, each slice's scores at those
    thresholds.
    """
    pairs = [_check(p, np.asarray(t) > 0) for p, t in zip(probs, truths)]
    if not pairs:
        raise ValueError("evaluate: no slices given")
    n_t = len(thresholds)
    # per threshold and slice: pixel counts (tp, |pred|, |truth|) and Rand pair sums
    px = np.zeros((n_t, len(pairs), 3))
    rs = np.zeros((n_t, len(pairs), 3))
    gt_segs = [ndi.label(truth, structure=_FOUR)[0] for _, truth in pairs]
    for a, t in enumerate(thresholds):
        for s, (prob, truth) in enumerate(pairs):
            pred = prob > t
            px[a, s] = (np.count_nonzero(pred & truth), np.count_nonzero(pred),
                        np.count_nonzero(truth))
            rs[a, s] = _rand_sums(gt_segs[s], ndi.label(pred, structure=_FOUR)[0])
    f1 = lambda c: 1.0 if c[1] + c[2] == 0 else 2.0 * c[0] / (c[1] + c[2])
    best_px = int(np.argmax([f1(px[a].sum(0)) for a in range(n_t)]))   # first best, as Fiji
    best_rs = int(np.argmax([_rand_f(rs[a].sum(0)) for a in range(n_t)]))
    per = [{"pixel_error": 1.0 - f1(px[best_px, s]), "rand_error": 1.0 - _rand_f(rs[best_rs, s]),
            "iou": float(iou(prob > 0.5, truth))} for s, (prob, truth) in enumerate(pairs)]
    out = {"pixel_error": 1.0 - f1(px[best_px].sum(0)),
           "rand_error": 1.0 - _rand_f(rs[best_rs].sum(0)),
           "iou": float(np.mean([m["iou"] for m in per]))}
    chosen = {"pixel_error": thresholds[best_px], "rand_error": thresholds[best_rs]}
    if topology:
        warps = [[warping_error(prob, truth, t) for prob, truth in pairs] for t in thresholds]
        sm = [sum(w["merge"] + w["split"] for w in ws) for ws in warps]
        every = [sum(w["warping_error_all"] for w in ws) for ws in warps]
        best_w, best_all = int(np.argmin(sm)), int(np.argmin(every))
        thin = np.array([[thinned_scores(prob, truth, t) for prob, truth in pairs]
                         for t in THINNED_THRESHOLDS])                  # (T', N, 2)
        best_vr = int(np.argmax(thin[:, :, 0].mean(1)))
        best_vi = int(np.argmax(thin[:, :, 1].mean(1)))
        for s, m in enumerate(per):
            m.update(warping_error=warps[best_w][s]["warping_error"],
                     warping_error_all=warps[best_all][s]["warping_error_all"],
                     v_rand=float(thin[best_vr, s, 0]), v_info=float(thin[best_vi, s, 1]),
                     **{k: warps[best_w][s][k] for k in KINDS})
        pixels = float(sum(truth.size for _, truth in pairs))
        out.update(warping_error=sm[best_w] / pixels,
                   warping_error_all=float(np.mean([w["warping_error_all"]
                                                    for w in warps[best_all]])),
                   v_rand=float(thin[best_vr, :, 0].mean()),
                   v_info=float(thin[best_vi, :, 1].mean()),
                   warping_counts={k: sum(w[k] for w in warps[best_w]) for k in KINDS})
        chosen.update(warping_error=thresholds[best_w], warping_error_all=thresholds[best_all],
                      v_rand=THINNED_THRESHOLDS[best_vr], v_info=THINNED_THRESHOLDS[best_vi])
    out = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}
    out["thresholds"] = {k: float(v) for k, v in chosen.items()}
    out["per_slice"] = [{k: (float(v) if isinstance(v, (float, np.floating)) else v)
                         for k, v in m.items()} for m in per]
    return out
