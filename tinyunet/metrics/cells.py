"""The cell tracking challenge's segmentation score SEG, and detection scores, for instance
labels (one id per cell) against a reference that may annotate only part of a frame (-1: not
annotated, left out of every score).

    seg                     SEG (Ulman et al., Nature Methods 2017): the mean Jaccard index of
                            every reference cell with the predicted cell that covers more than
                            half of it (0 where none does); F1 and AP at IoU 0.5 beside it
    merged_and_split_cells  the reference cells merged into one predicted cell, and those split
                            among several
"""
import numpy as np


def _overlaps(pred, ref):
    """(ref ids, pred ids, |R n S|) of every overlapping pair (R > 0, S > 0), and the sizes of
    the reference and predicted cells ({id: pixels})."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    both = (ref > 0) & (pred > 0)
    # each side to int64 on its own: stacking int64 with uint64 would round ids above 2**53
    pairs, n = np.unique(np.stack([ref[both].astype(np.int64), pred[both].astype(np.int64)]),
                         axis=1, return_counts=True)
    ref_ids, ref_n = np.unique(ref[ref > 0], return_counts=True)
    pred_ids, pred_n = np.unique(pred[pred > 0], return_counts=True)
    return pairs[0], pairs[1], n, dict(zip(ref_ids.tolist(), ref_n.tolist())), \
        dict(zip(pred_ids.tolist(), pred_n.tolist()))


def _check_instances(pred, ref):
    """[(predicted, reference)] frames from label images (H, W), stacks (N, H, W), or lists of
    2-D frames (of any sizes, a pair of one size each)."""
    def frames(x):
        if isinstance(x, (list, tuple)):
            return [np.asarray(f) for f in x]
        x = np.asarray(x)
        return [x] if x.ndim == 2 else list(x)
    pred, ref = frames(pred), frames(ref)
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predicted frames but {len(ref)} reference frames")
    for p, r in zip(pred, ref):
        if p.shape != r.shape or p.ndim != 2:
            raise ValueError(f"predicted labels {p.shape} and reference labels {r.shape} must "
                             f"be label images (H, W) or stacks (N, H, W) of one shape")
        for name, a in (("predicted", p), ("reference", r)):
            if a.dtype.kind not in "iub":
                raise ValueError(f"{name} labels must be integers (0 = background, one id per "
                                 f"cell), got {a.dtype}")
    return pred, ref


def seg(pred, ref):
    """The cell tracking challenge's SEG of predicted instance labels against reference ones:
    frames (H, W), stacks (N, H, W) or lists of frames; 0 = background, one id per cell (per
    frame).

    A reference cell R and a predicted cell S match when |R n S| > 0.5 |R| (so at most one S
    matches R); R scores the Jaccard index |R n S| / |R u S| of its match, 0 when it has none;
    SEG is the mean over every reference cell of every frame (a stack with no reference cell
    scores nan). Reference pixels < 0 (unannotated) are left out of everything.

    Also the detection scores of today's papers at IoU 0.5: a predicted and a reference cell
    with IoU > 0.5 are a true positive (IoU > 0.5 pairs them one to one); precision, recall,
    F1 = 2 TP / (2 TP + FP + FN) and ap50 = TP / (TP + FP + FN) (Stringer et al.'s "average
    precision" at one threshold).

    Returns a dict: "seg", "f1", "ap50", "precision", "recall", the counts "reference",
    "predicted", "matched" (SEG matches) and "tp", and "per_cell": [(frame, reference id,
    score)] in frame and id order.
    """
    pred, ref = _check_instances(pred, ref)
    per_cell, n_ref, n_pred, matched, tp = [], 0, 0, 0, 0
    for k, (p, r) in enumerate(zip(pred, ref)):
        p = np.where(r < 0, 0, p)                     # unannotated regions: not scored
        r_ids, p_ids, inter, r_size, p_size = _overlaps(p, r)
        best = {}                                     # reference id -> (score) of its match
        for a, b, n in zip(r_ids.tolist(), p_ids.tolist(), inter.tolist()):
            j = n / (r_size[a] + p_size[b] - n)
            if n > 0.5 * r_size[a]:
                best[a] = j
            tp += j > 0.5
        per_cell += [(k, a, float(best.get(a, 0.0))) for a in sorted(r_size)]
        n_ref, n_pred, matched = n_ref + len(r_size), n_pred + len(p_size), matched + len(best)
    fp, fn = n_pred - tp, n_ref - tp
    scores = [s for _, _, s in per_cell]
    return dict(seg=float(np.mean(scores)) if scores else float("nan"),
                f1=2 * tp / (2 * tp + fp + fn) if n_ref + n_pred else 1.0,
                ap50=tp / (tp + fp + fn) if n_ref + n_pred else 1.0,
                precision=tp / n_pred if n_pred else 1.0, recall=tp / n_ref if n_ref else 1.0,
                reference=n_ref, predicted=n_pred, matched=matched, tp=int(tp),
                per_cell=per_cell)


def merged_and_split_cells(pred, ref, min_fraction=0.2):
    """Reference cells that the prediction merges or splits, frame by frame.

    A predicted cell merges the reference cells of which it covers the largest part, when it is
    the largest cover of two or more of them and covers each by more than half; a reference cell
    is split when two or more predicted cells each cover at least `min_fraction` of it. Returns
    a list (one per frame) of dicts: "merged" and "split" (the reference ids) and their counts.
    """
    pred, ref = _check_instances(pred, ref)
    out = []
    for p, r in zip(pred, ref):
        r_ids, p_ids, inter, r_size, _ = _overlaps(np.where(r < 0, 0, p), r)
        cover = {}                                    # reference id -> (largest overlap, pred id)
        split = set()
        for a in r_size:
            sel = r_ids == a
            if sel.any():
                k = int(np.argmax(inter[sel]))
                cover[a] = (int(inter[sel][k]), int(p_ids[sel][k]))
                if (inter[sel] >= min_fraction * r_size[a]).sum() >= 2:
                    split.add(a)
        by_pred = {}
        for a, (n, b) in cover.items():
            if n > 0.5 * r_size[a]:
                by_pred.setdefault(b, []).append(a)
        merged = sorted(a for cells in by_pred.values() if len(cells) >= 2 for a in cells)
        out.append(dict(merged=merged, split=sorted(split), merges=len(merged),
                        splits=len(split)))
    return out
