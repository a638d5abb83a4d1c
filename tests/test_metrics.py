"""The ISBI metrics against references written from the definitions, on hand-made cases."""
import itertools

import numpy as np
import pytest

from tinyunet import metrics


def components(mask):
    """4-connected components by flood fill (the reference's own, not scipy's)."""
    lab = np.zeros(mask.shape, int)
    n = 0
    for start in zip(*np.nonzero(mask)):
        if lab[start]:
            continue
        n += 1
        stack = [start]
        lab[start] = n
        while stack:
            y, x = stack.pop()
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                q = (y + dy, x + dx)
                if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and not lab[q]:
                    lab[q] = n
                    stack.append(q)
    return lab


def rand_fscore_by_pairs(pred, truth):
    """Rand F-score from its pair-counting definition, restricted to ground-truth foreground:
    over all pairs of pixels in the GT foreground (each pixel also paired with itself), count
    pairs in the same GT segment, in the same predicted segment, and in both. A pixel predicted
    as background is in a segment of its own."""
    g, p = components(truth), components(pred)
    pix = list(zip(*np.nonzero(truth)))
    pred_id = {q: (p[q] if p[q] else -(k + 1)) for k, q in enumerate(pix)}   # singletons
    same_both = same_gt = same_pred = 0
    for a, b in itertools.product(pix, pix):
        sg, sp = g[a] == g[b], pred_id[a] == pred_id[b]
        same_gt += sg
        same_pred += sp
        same_both += sg and sp
    prec, rec = same_both / same_pred, same_both / same_gt
    return 2 * prec * rec / (prec + rec)


CASES = {
    "perfect": (np.array([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]]),) * 2,
    "merge": (np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]),
              np.array([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]])),
    "split": (np.array([[1, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]]),
              np.array([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]])),
    "holes": (np.array([[1, 0, 1, 1, 1], [1, 1, 0, 1, 1], [0, 0, 0, 0, 1]]),
              np.array([[1, 1, 1, 0, 1], [1, 1, 1, 0, 1], [0, 0, 0, 0, 1]])),
}


@pytest.mark.parametrize("name", CASES)
def test_rand_fscore_matches_pair_counting(name):
    pred, truth = (a.astype(bool) for a in CASES[name])
    assert metrics.rand_fscore(pred, truth) == pytest.approx(rand_fscore_by_pairs(pred, truth))


def test_rand_fscore_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(10):
        truth, pred = rng.random((2, 6, 7)) > 0.4
        if truth.any():
            assert metrics.rand_fscore(pred, truth) == pytest.approx(
                rand_fscore_by_pairs(pred, truth))


def test_singletons_convention_differs_from_one_background_segment():
    truth = np.ones((1, 4), bool)
    pred = np.array([[True, False, False, True]])
    # GT: one segment of 4. Pred: {0}, {3} and two singletons -> sum n^2 = 4, t^2 = 4, s^2 = 16
    assert metrics.rand_fscore(pred, truth) == pytest.approx(2 * 4 / (16 + 4))


def test_merge_is_penalised_and_perfect_is_zero_error():
    merge_pred, truth = (a.astype(bool) for a in CASES["merge"])
    assert metrics.rand_fscore(truth, truth) == 1.0
    assert metrics.rand_fscore(merge_pred, truth) < 0.8
    # a merge costs few pixels but a lot of Rand score
    assert metrics.f1_score(merge_pred, truth) > 0.85


def test_pixel_error_is_best_f1_over_thresholds():
    truth = np.array([[1, 1, 0, 0]], bool)
    prob = np.array([[0.9, 0.35, 0.3, 0.05]])
    # t = 0.3: pred {0, 1} (0.35 > 0.3, 0.3 is not > 0.3) = truth: error 0
    m = metrics.slice_metrics(prob, truth)
    assert m["pixel_error"] == pytest.approx(0.0)
    assert m["iou"] == pytest.approx(0.5)                # at 0.5 only pixel 0
    m = metrics.slice_metrics(np.array([[0.9, 0.05, 0.95, 0.05]]), truth)
    # t = 0.0: all four pixels, tp 2, F1 = 4/6; t in 0.1..0.8: {0, 2}, F1 = 2/4; t = 0.9: {2}, 0
    assert m["pixel_error"] == pytest.approx(1 / 3)


def test_evaluate_means_and_accepts_isbi_labels():
    truth = np.array([[[255, 0], [255, 255]], [[0, 0], [255, 0]]], np.uint8)
    probs = (truth == 255).astype(float)
    res = metrics.evaluate(probs, truth)
    assert res["pixel_error"] == 0 and res["rand_error"] == 0 and res["iou"] == 1
    assert len(res["per_slice"]) == 2
    with pytest.raises(ValueError, match="one shape"):
        metrics.evaluate([np.zeros((2, 2))], [np.zeros((3, 2))])


def _two_cells():
    """Two 20x20 true cells side by side, a 2-px membrane between them and around them."""
    truth = np.zeros((24, 46), bool)
    truth[2:22, 2:22] = truth[2:22, 24:44] = True
    return truth


def test_merges_and_splits_finds_a_gap_and_a_cut():
    truth = _two_cells()
    assert metrics.merges_and_splits(truth, truth)["merges"] == 0
    gap = truth.copy()
    gap[5:9, 22:24] = True                          # a gap in the membrane joins the two cells
    ms = metrics.merges_and_splits(gap, truth)
    assert (ms["merges"], ms["splits"]) == (1, 0)
    assert ms["merged"].sum() == truth.sum() and not ms["split"].any()
    cut = truth.copy()
    cut[11, 24:44] = False                          # a false membrane cuts the right cell
    ms = metrics.merges_and_splits(cut, truth)
    assert (ms["merges"], ms["splits"]) == (0, 1)
    assert ms["split"].sum() == 400 and ms["split"][2:22, 24:44].all()
    assert not ms["split"][:, :23].any()


def test_merges_and_splits_ignores_slivers():
    truth = _two_cells()
    pred = np.zeros_like(truth)
    pred[2:22, 2:25] = True                         # the border between the cells shifted by 2 px:
    pred[2:22, 27:44] = True                        # the left cell takes a 20-px sliver of the right
    assert metrics.merges_and_splits(pred, truth, min_pixels=21)["merges"] == 0
    assert metrics.merges_and_splits(pred, truth, min_pixels=20)["merges"] == 1
