"""The ISBI scores' conventions, each on a case small enough to work out by hand: empty images,
a pixel exactly at the threshold, Fiji's threshold loop, the masks of merged and split cells, and
a stack's scores against the single-slice functions they are made of (a literal reference)."""
from collections import Counter

import numpy as np
import pytest

from tinyunet import metrics
from tinyunet.metrics import isbi

EMPTY = np.zeros((6, 6), bool)


def test_empty_images_score_perfectly_and_a_stray_pixel_scores_zero():
    """Nothing predicted where there is nothing: every F-score is 1; one stray pixel: F1 and IoU 0."""
    assert isbi.f1_score(EMPTY, EMPTY) == 1.0 and isbi.iou(EMPTY, EMPTY) == 1.0
    assert isbi.rand_fscore(EMPTY, EMPTY) == 1.0
    assert isbi.info_fscore(np.zeros((6, 6), int), np.zeros((6, 6), int)) == 1.0
    one = EMPTY.copy()
    one[2, 3] = True                     # |pred| + |truth| = 1 and the union is one pixel
    assert isbi.f1_score(one, EMPTY) == 0.0 and isbi.iou(one, EMPTY) == 0.0
    res = metrics.evaluate([np.zeros((6, 6))], [EMPTY], topology=False)
    assert res["pixel_error"] == 0.0 and res["rand_error"] == 0.0
    # truth empty, a confident stray pixel: |pred| = 1 at every threshold, tp = 0, F1 = 0
    res = metrics.evaluate([one * 0.99], [EMPTY], topology=False)
    assert res["pixel_error"] == 1.0 and res["per_slice"][0]["pixel_error"] == 1.0


def test_one_truth_pixel_has_no_information_to_score():
    """A single ground-truth pixel: H(A) = 0, so V_info is 0 as in Fiji (not 1)."""
    gt = np.zeros((3, 3), int)
    gt[1, 1] = 1
    assert isbi.info_fscore(gt, gt) == 0.0


def test_a_pixel_exactly_at_the_threshold_is_background():
    """Foreground is p > t: a map of exactly 0.5 off the cells is right at t = 0.5 in every score."""
    truth = np.zeros((12, 12), bool)
    truth[2:10, 2:5] = truth[2:10, 7:10] = True       # two cells, 4-connected, apart
    prob = np.where(truth, 0.9, 0.5)
    assert isbi.slice_metrics(prob, truth, thresholds=(0.5,)) == \
        {"pixel_error": 0.0, "rand_error": 0.0, "iou": 1.0}
    assert isbi.thinned_scores(prob, truth, 0.5) == (1.0, 1.0)
    warped, mismatches, _ = isbi.warp_ground_truth(prob, truth)      # the default t is 0.5
    assert len(mismatches) == 0 and (warped == truth).all()
    res = metrics.evaluate([prob], [truth], thresholds=(0.5,), topology=False)
    assert res["per_slice"][0]["iou"] == 1.0 and res["iou"] == 1.0


def test_java_range_is_fijis_loop_float_for_float():
    """th = lo; th <= hi; th += step: the end is included when reached, and 0.1's sum stops short."""
    assert isbi.java_range(0.0, 1.0, 0.25) == (0.0, 0.25, 0.5, 0.75, 1.0)
    t = isbi.java_range(0.0, 1.0, 0.1)
    assert len(t) == 11 and t[-1] == 0.9999999999999999 and t[3] == 0.1 + 0.1 + 0.1


def test_rand_fscore_when_the_pair_sums_are_equal():
    """F = 2 sum n_ij^2 / (sum s_i^2 + sum t_j^2), also where the two sums are equal but not F = 1."""
    truth = np.zeros((3, 4), bool)
    truth[0, 0] = True                                # cell A: 1 px
    truth[2, :] = True                                # cell B: 4 px
    pred = np.zeros((3, 4), bool)
    pred[0:3, 0] = True                               # A, the gap below it and B's first px ...
    pred[2, 0:3] = True                               # ... and B's next two: one segment
    # s = 1^2 + 4^2 = 17; t = 4^2 + 1 (B's last pixel, predicted background, a singleton) = 17;
    # n_ij = 1^2 (A) + 3^2 (B) + 1 (the singleton) = 11: F = 22 / 34
    assert isbi.rand_fscore(pred, truth) == pytest.approx(22 / 34)


def test_contingency_keys_do_not_collide():
    """Every (true, predicted) pair is counted on its own: many true cells, few predicted ones."""
    gt = np.arange(1, 9).reshape(2, 4)                # eight true cells of one pixel
    pr = np.array([[2, 1, 2, 1], [1, 2, 1, 2]])       # two predicted segments
    n_ij, s_i, t_j, singles = isbi._contingency(gt, pr)
    assert sorted(n_ij) == [1.0] * 8 and sorted(t_j) == [4.0, 4.0] and singles == 0
    # three predicted ids (base 4): pairs (5, 1) and (1, 2) are different cells of the table,
    # though 5 / 4 + 1 == 1 / 4 + 2 exactly; so are (2, 3) and the rest
    n_ij, s_i, t_j, singles = isbi._contingency(np.array([[1, 5, 2]]), np.array([[2, 1, 3]]))
    assert sorted(n_ij) == [1.0, 1.0, 1.0] and sorted(s_i) == [1.0] * 3


def test_contingency_is_the_table_of_pair_counts():
    """n_ij = pixels of true segment i in predicted segment j > 0, counted by a dictionary; s_i,
    t_j its row and column sums (t_j without the singletons), singletons = predicted 0 inside."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        gt = rng.integers(0, 30, (9, 11))            # 0 = outside the ground-truth foreground
        pr = rng.integers(0, 8, (9, 11))             # 0 = singletons
        table, rows, cols, singles = Counter(), Counter(), Counter(), 0
        for g, p in zip(gt.ravel(), pr.ravel()):
            if g == 0:
                continue
            rows[g] += 1
            if p == 0:
                singles += 1
            else:
                table[g, p] += 1
                cols[p] += 1
        n_ij, s_i, t_j, n_singles = isbi._contingency(gt, pr)
        assert sorted(n_ij) == sorted(table.values()) and n_singles == singles
        assert sorted(s_i) == sorted(rows.values()) and sorted(t_j) == sorted(cols.values())


def test_info_fscore_from_its_definition_with_singletons():
    """V_info = 2 I / (H(A) + H(B)), H over p = size / n, each predicted-background pixel a segment."""
    gt = np.array([[1, 1, 1, 2, 2, 0],
                   [1, 1, 1, 2, 2, 0],
                   [3, 3, 3, 3, 3, 0]])
    pr = np.array([[1, 1, 0, 1, 1, 5],
                   [1, 1, 0, 2, 2, 5],
                   [0, 4, 4, 4, 4, 0]])
    inside = gt > 0
    g = gt[inside]
    # predicted segments with each background pixel a segment of its own (ids -1, -2, ...)
    p = np.where(pr[inside] > 0, pr[inside], -np.arange(1, inside.sum() + 1))
    n = float(g.size)

    def h(labels):
        _, c = np.unique(labels, return_counts=True, axis=0)
        return -sum(k / n * np.log(k / n) for k in c)
    h_a, h_b, h_ab = h(g), h(p), h(np.stack([g, p], 1))
    assert isbi.info_fscore(gt, pr) == pytest.approx(2 * (h_a + h_b - h_ab) / (h_a + h_b),
                                                     rel=1e-12)


def test_merged_and_split_masks_are_the_true_cells_concerned():
    """The masks are exactly the true cells a predicted cell merges or that two predicted cells
    split; an overlap of min_pixels (20 by default) counts, the background overlaps nothing."""
    truth = np.zeros((20, 30), bool)
    truth[1:5, 1:6] = truth[1:5, 8:13] = True          # A and B: 20 px each, 2 columns apart
    truth[10:19, 1:6] = True                           # C: 9 rows of 5 px
    truth[10:18, 20:25] = True                         # D: predicted as it is
    a, b, c = (np.zeros_like(truth) for _ in range(3))
    a[1:5, 1:6] = b[1:5, 8:13] = c[10:19, 1:6] = True
    pred = np.zeros_like(truth)
    pred[1:5, 1:13] = True                             # one cell over A, the gap and B: merge
    pred[10:14, 1:6] = pred[15:18, 1:6] = True         # C in two pieces: 20 px and 15 px
    pred[10:18, 20:25] = True
    got = isbi.merges_and_splits(pred, truth)
    assert (got["merged"] == (a | b)).all() and got["merges"] == 1
    # the 15-px piece is a sliver (< 20): C is not split, though the background (row 14 and
    # row 18) overlaps A, B and C alike
    assert not got["split"].any() and got["splits"] == 0
    pred[18, 1:6] = True                               # now 20 px and 20 px: C is split
    got = isbi.merges_and_splits(pred, truth)
    assert (got["split"] == c).all() and got["splits"] == 1 and got["merges"] == 1
    assert isbi.merges_and_splits(pred, truth, min_pixels=21)["splits"] == 0


def test_the_background_is_not_a_predicted_cell_that_merges_or_splits():
    """Pixels predicted as background overlap no predicted cell: two true cells both missed are
    not merged, and a true cell half missed is not split. Every true cell is in the masks when
    concerned, the first one labelled (top left) too."""
    truth = np.zeros((12, 20), bool)
    truth[1:6, 1:9] = truth[1:6, 11:19] = True         # A and B: 40 px each
    none = isbi.merges_and_splits(np.zeros_like(truth), truth)
    assert (none["merges"], none["splits"]) == (0, 0)
    assert not none["merged"].any() and not none["split"].any()
    half = np.zeros_like(truth)
    half[1:6, 1:5] = True                              # 20 px of A predicted, 20 px missed
    got = isbi.merges_and_splits(half, truth)
    assert (got["merges"], got["splits"]) == (0, 0) and not got["split"].any()
    half[1:6, 6:9] = True                              # and a second piece of 15 px
    got = isbi.merges_and_splits(half, truth, min_pixels=15)
    a = np.zeros_like(truth)
    a[1:6, 1:9] = True
    assert got["splits"] == 1 and (got["split"] == a).all() and not got["merged"].any()


@pytest.mark.parametrize("score", [isbi.rand_fscore, isbi.merges_and_splits])
def test_single_slice_scores_refuse_a_stack_or_two_shapes(score):
    """rand_fscore and merges_and_splits score one 2-D slice (4-connected cells): a stack, or a
    prediction and a truth of different shapes, is refused saying what is expected."""
    with pytest.raises(ValueError, match=r"prediction \(2, 4, 4\) and ground truth \(2, 4, 4\) "
                                         "must be 2-D images of one shape"):
        score(np.ones((2, 4, 4), bool), np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match=r"prediction \(4, 4\) and ground truth \(4, 5\)"):
        score(np.ones((4, 4), bool), np.ones((4, 5), bool))


def blobs(rng, n=40):
    """A cell image of a few touching-free blobs and a noisy probability map of it."""
    truth = np.zeros((n, n), bool)
    for _ in range(5):
        y, x = rng.integers(4, n - 10, 2)
        truth[y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = True
    prob = np.clip(0.5 + 0.35 * (truth - 0.5) * 2 + rng.normal(0, 0.3, truth.shape), 0, 1)
    return prob, truth


def test_a_stacks_scores_are_the_single_slice_scores_at_the_chosen_thresholds():
    """evaluate = the literal reference: per threshold, each slice scored alone; each metric keeps
    the threshold that scores the stack best; per-slice values at those thresholds."""
    rng = np.random.default_rng(4)
    pairs = [blobs(rng) for _ in range(2)]
    probs, truths = [p for p, _ in pairs], [t for _, t in pairs]
    res = metrics.evaluate(probs, truths)
    T, TT = isbi.THRESHOLDS, isbi.THINNED_THRESHOLDS
    warps = [[isbi.warping_error(p, t, th) for p, t in pairs] for th in T]
    sm = [sum(w["merge"] + w["split"] for w in ws) for ws in warps]
    every = [sum(w["warping_error_all"] for w in ws) for ws in warps]
    thin = np.array([[isbi.thinned_scores(p, t, th) for p, t in pairs] for th in TT])
    best = {"warping_error": int(np.argmin(sm)), "warping_error_all": int(np.argmin(every)),
            "v_rand": int(np.argmax(thin[:, :, 0].mean(1))),
            "v_info": int(np.argmax(thin[:, :, 1].mean(1)))}
    # the case is one where the choices differ from the first threshold and from each other
    assert best["warping_error"] != best["warping_error_all"] and best["v_rand"] != \
        best["v_info"] and min(best.values()) > 0 and max(sm) > min(sm)
    assert res["thresholds"] == {"pixel_error": res["thresholds"]["pixel_error"],
                                 "rand_error": res["thresholds"]["rand_error"],
                                 "warping_error": T[best["warping_error"]],
                                 "warping_error_all": T[best["warping_error_all"]],
                                 "v_rand": TT[best["v_rand"]], "v_info": TT[best["v_info"]]}
    pixels = sum(t.size for t in truths)
    assert res["warping_error"] == sm[best["warping_error"]] / pixels
    assert res["warping_error_all"] == pytest.approx(every[best["warping_error_all"]] / 2)
    assert res["v_rand"] == pytest.approx(thin[best["v_rand"], :, 0].mean())
    assert res["v_info"] == pytest.approx(thin[best["v_info"], :, 1].mean())
    t_px, t_rs = res["thresholds"]["pixel_error"], res["thresholds"]["rand_error"]
    for s, ((p, t), m) in enumerate(zip(pairs, res["per_slice"])):
        w = warps[best["warping_error"]][s]
        assert m["pixel_error"] == pytest.approx(1 - isbi.f1_score(p > t_px, t))
        assert m["rand_error"] == pytest.approx(1 - isbi.rand_fscore(p > t_rs, t))
        assert m["warping_error"] == w["warping_error"] and m["merge"] == w["merge"]
        assert m["warping_error_all"] == \
            warps[best["warping_error_all"]][s]["warping_error_all"]
        assert m["v_rand"] == thin[best["v_rand"], s, 0]
        assert m["v_info"] == thin[best["v_info"], s, 1]
    # the rand error's threshold is the stack's best too, here not the first
    sums = [np.sum([isbi._rand_sums(*(isbi.ndi.label(x, structure=isbi._FOUR)[0]
                                      for x in (t, p > th))) for p, t in pairs], 0) for th in T]
    assert T.index(t_rs) == int(np.argmax([isbi._rand_f(s) for s in sums])) > 0
    # plain floats, so that a printed report reads 0.1, not np.float64(0.1)
    assert all(type(v) is float for k, v in res.items() if k not in
               ("thresholds", "per_slice", "warping_counts"))
    assert all(type(v) is float for m in res["per_slice"] for k, v in m.items()
               if k in ("pixel_error", "rand_error", "iou", "warping_error", "v_rand"))


def test_bad_stacks_are_refused_with_what_was_wrong():
    """No slices, or a map and a truth of different shapes, are refused saying what is expected."""
    with pytest.raises(ValueError, match="^evaluate: no slices given$"):
        metrics.evaluate([], [])
    with pytest.raises(ValueError, match=r"\(4, 4\) and ground truth \(4, 5\) must be 2-D "
                                         "images of one shape"):
        metrics.evaluate([np.zeros((4, 4))], [np.zeros((4, 5))])


def test_warping_error_counts_every_mismatch_over_the_pixels_at_its_threshold():
    """warping_error_all = remaining mismatches / (H W), at the threshold asked for."""
    truth = np.zeros((9, 9), bool)
    truth[2:7, 2:7] = True
    prob = np.where(truth, 0.4, 0.0)
    prob[4, 4] = 0.0                                   # a hole in the cell: not simple to fill
    # at t = 0.3 the cell is predicted, with a one-pixel hole: one mismatch (a hole addition)
    w = isbi.warping_error(prob, truth, 0.3)
    assert w["warping_error_all"] == 1 / 81 and w["hole_addition"] == 1
    # at 0.5 nothing is predicted: the cell is deleted, down to one pixel that cannot be flipped
    w = isbi.warping_error(prob, truth, 0.5)
    assert w["warping_error_all"] == 1 / 81 and w["object_deletion"] == 1
    # warp_ground_truth's own default threshold is 0.5 too
    assert len(isbi.warp_ground_truth(prob, truth)[1]) == 1


@pytest.mark.parametrize("score", [
    isbi.slice_metrics,
    lambda p, t: isbi.thinned_scores(p, t, 0.5),
    lambda p, t: isbi.warp_ground_truth(p, t),
    lambda p, t: isbi.evaluate([p], [t]),
], ids=["slice_metrics", "thinned_scores", "warp_ground_truth", "evaluate"])
def test_probability_scores_refuse_two_shapes_naming_the_probability_map(score):
    """The scores of a probability map name it in their message: the map's shape and the
    truth's, and what is expected."""
    with pytest.raises(ValueError, match=r"^probability map \(4, 4\) and ground truth \(4, 5\) "
                                         r"must be 2-D images of one shape$"):
        score(np.full((4, 4), 0.5), np.ones((4, 5), bool))
