"""The warping error, V_rand and V_info: hand-made cases, the simple-point table, and the fast
kernels against the slow references of tests/reference.py on real ISBI labels."""
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from tinyunet.kernels.thinning import thin_borders
from tinyunet.kernels.warping import KINDS, RING, SIMPLE
from tests import reference as ref
from tinyunet import metrics


def two_cells(h=8, w=9, membrane=4):
    """Two cells side by side, a 1-px membrane (background) in column `membrane`."""
    truth = np.ones((h, w), bool)
    truth[:, membrane] = False
    return truth


def kinds_of(prob, truth, t=0.5):
    _, mism, kinds = metrics.warp_ground_truth(prob, truth, t)
    return sorted(KINDS[k] for k in kinds), mism


# ---- simple points ----------------------------------------------------------------------------

def framed(code, centre):
    """The 3x3 neighbourhood `code` with the given centre, inside a 5x5 background frame."""
    img = np.zeros((5, 5), bool)
    for k, (dy, dx) in enumerate(RING):
        img[2 + dy, 2 + dx] = (code >> k) & 1
    img[2, 2] = centre
    return img


def test_simple_table_against_brute_force_component_counts():
    # Flipping the centre of a framed neighbourhood keeps the number of 4-connected foreground
    # and of 8-connected background components exactly when the centre is simple.
    for code in range(256):
        counts = [(len(ref.components(framed(code, c), ref.STEPS4)),
                   len(ref.components(~framed(code, c), ref.STEPS8))) for c in (0, 1)]
        assert SIMPLE[code] == (counts[0] == counts[1]), code
        assert SIMPLE[code] == ref.is_simple(framed(code, 0)[1:4, 1:4]), code


def test_flipping_simple_pixels_keeps_the_topology_of_random_images():
    rng = np.random.default_rng(0)
    for _ in range(30):
        img = np.zeros((10, 10), bool)
        img[1:-1, 1:-1] = rng.random((8, 8)) < 0.55          # background frame all round
        before = (ndi.label(img, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))[1],
                  ndi.label(~img, np.ones((3, 3)))[1])
        for y, x in zip(*np.nonzero(np.ones((8, 8)))):
            y, x = y + 1, x + 1
            code = sum(int(img[y + dy, x + dx]) << k for k, (dy, dx) in enumerate(RING))
            if SIMPLE[code]:
                flipped = img.copy()
                flipped[y, x] = ~flipped[y, x]
                after = (ndi.label(flipped, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))[1],
                         ndi.label(~flipped, np.ones((3, 3)))[1])
                assert after == before


# ---- hand-made cases ----------------------------------------------------------------------------

def test_identical_maps_give_zero():
    truth = two_cells()
    w = metrics.warping_error(truth.astype(float), truth)
    assert w["warping_error"] == 0 and w["warping_error_all"] == 0
    assert all(w[k] == 0 for k in KINDS)


def test_boundary_moved_by_one_pixel_is_forgiven():
    truth = two_cells(membrane=4)
    moved = two_cells(membrane=5).astype(float)
    assert metrics.warping_error(moved, truth)["warping_error_all"] == 0
    m = metrics.slice_metrics(moved, truth)
    assert m["rand_error"] > 0 and m["pixel_error"] > 0
    warped, mism, _ = metrics.warp_ground_truth(moved, truth, 0.5)
    assert len(mism) == 0 and (warped == (moved > 0.5)).all()


def test_gap_in_a_membrane_is_one_merge_pixel():
    # a 3-px thick membrane; the prediction opens a 1-px high gap through it (3 pixels): two of
    # them are simple (the ground truth's cell can grow into them), the last would join the two
    # cells and is not
    truth = np.ones((9, 11), bool)
    truth[:, 4:7] = False
    pred = truth.copy()
    pred[4, 4:7] = True
    kinds, mism = kinds_of(pred.astype(float), truth)
    assert kinds == ["merge"] and mism[0, 0] == 4 and 4 <= mism[0, 1] <= 6
    w = metrics.warping_error(pred.astype(float), truth)
    assert w["warping_error"] == pytest.approx(1 / truth.size)
    assert w["merge"] == 1 and w["split"] == 0


@pytest.mark.parametrize("thickness", [1, 2])
def test_new_membrane_across_a_cell_is_a_split_of_its_thickness(thickness):
    # one cell framed by a membrane; the prediction draws a horizontal membrane across it: the
    # line's pixels can be flipped from both ends inward, except a bridge of `thickness` pixels
    # (one column of it) that keeps the two halves joined
    truth = np.zeros((12, 10), bool)
    truth[1:-1, 1:-1] = True
    pred = truth.copy()
    pred[5:5 + thickness, 1:-1] = False
    kinds, mism = kinds_of(pred.astype(float), truth)
    assert kinds == ["split"] * thickness
    assert len(set(mism[:, 1])) == 1                     # the bridge is one column
    w = metrics.warping_error(pred.astype(float), truth)
    assert w["warping_error"] == pytest.approx(thickness / truth.size)


def test_an_extra_object_and_a_missing_object():
    truth = np.zeros((9, 9), bool)
    truth[2, 2] = True                                   # a one-pixel object, not predicted
    pred = np.zeros((9, 9))
    pred[6, 6] = 1                                       # a one-pixel object not in the truth
    kinds, _ = kinds_of(pred, truth)
    assert kinds == ["object_addition", "object_deletion"]


def test_pixel_and_rand_errors_punish_shifts_the_warping_error_forgives():
    truth = np.ones((16, 16), bool)
    truth[:, 7] = False
    truth[7, :] = False
    shifted = np.roll(truth, 1, axis=1).astype(float)    # the membrane moved by one pixel
    res = metrics.evaluate([shifted], [truth])
    assert res["warping_error"] == 0 and res["warping_error_all"] == 0
    assert res["rand_error"] > 0.01 and res["pixel_error"] > 0.01


# ---- V_rand and V_info --------------------------------------------------------------------------

def three_strips():
    """Three cells (4 px wide, 6 high) separated by 1-px membranes in columns 4 and 9."""
    truth = np.ones((6, 14), bool)
    truth[:, [4, 9]] = False
    return truth


def test_thick_correct_borders_cost_nothing_after_thinning():
    truth = three_strips()
    thick = truth.copy()
    thick[:, [3, 5, 8, 10]] = False                      # membranes 3 px wide, same places
    v_rand, v_info = metrics.thinned_scores(thick.astype(float), truth, 0.5)
    assert v_rand == pytest.approx(1.0) and v_info == pytest.approx(1.0)
    assert metrics.rand_fscore(thick, truth) < 0.9       # without thinning: singletons
    assert (thin_borders(thick) == ndi.label(truth, np.array([[0, 1, 0], [1, 1, 1],
                                                               [0, 1, 0]]))[0]).all()


def test_v_rand_and_v_info_of_a_merge_by_hand():
    # the prediction misses the first membrane: cells A and B (24 px each) are one segment, C
    # another. Rand: sum n^2 = 3 * 24^2, sum s^2 = 3 * 24^2, sum t^2 = 48^2 + 24^2.
    # Info: B is a function of A, so I = H(B); H(A) = log 3, H(B) = log 3 - 2/3 log 2.
    truth = three_strips()
    pred = truth.copy()
    pred[:, 4] = True
    v_rand, v_info = metrics.thinned_scores(pred.astype(float), truth, 0.5)
    assert v_rand == pytest.approx(2 * 3 * 24 ** 2 / (3 * 24 ** 2 + 48 ** 2 + 24 ** 2))
    h_a, h_b = np.log(3), np.log(3) - 2 / 3 * np.log(2)
    assert v_info == pytest.approx(2 * h_b / (h_a + h_b))


def test_v_info_is_zero_when_everything_is_one_segment():
    truth = three_strips()
    v_rand, v_info = metrics.thinned_scores(np.ones(truth.shape), truth, 0.5)
    assert v_info == 0.0                                 # H(prediction) = 0, as in Fiji
    assert v_rand == pytest.approx(3 * 24 ** 2 / (3 * 24 ** 2 + 72 ** 2) * 2)


def test_thinning_kernel_matches_the_literal_watershed(rng):
    for _ in range(12):
        cells = ndi.binary_opening(rng.random((30, 37)) < 0.6)
        assert (thin_borders(cells) == ref.thin_borders(cells)).all()
    assert (thin_borders(np.zeros((5, 6), bool)) == 1).all()   # no cell: one border segment


# ---- the fast warp against the slow reference, on real labels ------------------------------

def corruptions(truth, rng):
    """Realistic probability maps for a ground-truth crop: (name, prob)."""
    t = truth.astype(float)
    noisy = lambda p, s: np.clip(p + s * rng.standard_normal(p.shape), 0, 1)
    cut = truth.copy()
    mem = np.argwhere(~truth)
    for y, x in mem[rng.choice(len(mem), 25, replace=False)]:
        cut[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = True      # holes cut in the membranes
    lines = truth.copy()
    for _ in range(3):
        lines[rng.integers(0, truth.shape[0]), :] = False          # new membranes across cells
    return [("blur+noise", noisy(ndi.gaussian_filter(t, 2.0), 0.15)),
            ("eroded", noisy(ndi.binary_erosion(truth, iterations=2).astype(float), 0.05)),
            ("dilated", noisy(ndi.binary_dilation(truth, iterations=2).astype(float), 0.05)),
            ("cut membranes", noisy(ndi.gaussian_filter(cut.astype(float), 1.0), 0.1)),
            ("extra lines", noisy(lines.astype(float), 0.3))]


def test_fast_warp_matches_reference_on_isbi_crops(isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    rng = np.random.default_rng(0)
    seen = set()
    for k, (y, x) in enumerate([(100, 200), (300, 40)]):
        truth = labels[3 * k, y:y + 96, x:x + 96] > 0
        for name, prob in corruptions(truth, rng):
            for t in (0.3, 0.6):
                warped, mism, kinds = metrics.warp_ground_truth(prob, truth, t)
                r_warped, r_mism = ref.warp_ground_truth(prob, truth, t)
                assert (warped == r_warped).all(), name
                assert sorted(map(tuple, mism.tolist())) == sorted(r_mism), name
                got = {tuple(p): KINDS[c] for p, c in zip(mism.tolist(), kinds)}
                assert got == {p: ref.classify_mismatch(r_warped, *p) for p in r_mism}, name
                seen |= set(got.values())
    assert {"merge", "split"} <= seen                    # the corruptions do exercise both


def test_evaluate_picks_one_threshold_for_the_stack():
    truth = three_strips()
    # slice 0 is right only for t < 0.4, slice 1 only for t >= 0.6
    p0 = np.where(truth, 0.5, 0.3)
    p1 = np.where(truth, 0.9, 0.7)
    res = metrics.evaluate([p0, p1], [truth, truth])
    per_slice_best = [metrics.slice_metrics(p, truth)["pixel_error"] for p in (p0, p1)]
    assert per_slice_best == [0, 0]
    # no single threshold fits both: at best (t = 0.3 or 0.4) slice 0 is right and slice 1 calls
    # its 12 membrane pixels cell too: tp 144, |pred| 156, |truth| 144 summed over the stack
    assert res["pixel_error"] == pytest.approx(1 - 2 * 144 / (156 + 144))
    assert res["thresholds"]["pixel_error"] == 0.3
    assert set(res["thresholds"]) >= {"pixel_error", "rand_error", "warping_error", "v_rand"}
    assert len(res["per_slice"]) == 2 and "v_info" in res["per_slice"][0]
    assert metrics.THINNED_THRESHOLDS[-1] == pytest.approx(1.0) and \
        len(metrics.THINNED_THRESHOLDS) == 11


# ---- the visiting order -------------------------------------------------------------------------

def cut_across(p_left, p_right, t):
    """A cell 2 px wide; the prediction cuts it across at row 5, with p_left at (5, 1) and
    p_right at (5, 2). The first of the two visited is simple and is flipped; the second would
    then split the cell and stays: the one left tells which went first."""
    truth = np.zeros((12, 4), bool)
    truth[1:-1, 1:3] = True
    prob = np.where(truth, 1.0, 0.0)
    prob[5, 1], prob[5, 2] = p_left, p_right
    warped, mism, kinds = metrics.warp_ground_truth(prob, truth, t)
    assert warped.dtype == bool and [KINDS[k] for k in kinds] == ["split"]
    assert (~warped).sum() == truth.size - truth.sum() + 1       # a bool mask, one pixel flipped
    r_warped, r_mism = ref.warp_ground_truth(prob, truth, t)
    assert (warped == r_warped).all() and mism.tolist() == [list(r_mism[0])]
    return tuple(mism[0])


Q = float(np.float32(0.05))                               # a float32 value and the one below it
Q_BELOW = float(np.nextafter(np.float32(0.05), np.float32(0)))


@pytest.mark.parametrize("p_left, p_right, t, left", [
    (0.1, 0.2, 0.5, (5, 2)),       # |p - t| = 0.4 and 0.3: the left pixel goes first
    (0.2, 0.1, 0.5, (5, 1)),       # the right one is the more confident: it goes first
    (0.1, 0.1, 0.5, (5, 2)),       # a tie: column by column, the left one first
    # ties are those of the float32 map, as Fiji stores it: 0.5 - 1e-9 and 0.5 - 3e-9 are both
    # 0.5 in float32 (|p - t| = 0 and 0), though the right one is farther from t in float64
    (0.5 - 1e-9, 0.5 - 3e-9, 0.5, (5, 2)),
    # and |p - t| is rounded to float32 too: t - p = 0.849999999... and 0.850000002... are both
    # 0.85 in float32, a tie, though the right one is larger in float64
    (Q, Q_BELOW, 0.9, (5, 2)),
])
def test_the_most_confident_mismatch_is_visited_first(p_left, p_right, t, left):
    assert cut_across(p_left, p_right, t) == left


def test_ties_fall_column_by_column_whatever_the_sort():
    """Gaps 2 px long through a 2-px membrane, every other row, at two confidences (0.9 and
    0.7, alternating): the 0.9 gaps' pixels are visited first, then the 0.7 ones, each group
    column by column (x outer): the left pixel of each gap grows the left cell and the right
    one, which would merge the two cells, stays: every mismatch left is in column 5."""
    truth = np.ones((41, 11), bool)
    truth[:, 4:6] = False
    prob = truth.astype(float)
    rows = list(range(1, 40, 2))                          # 20 gaps, 40 tied mismatches
    for k, r in enumerate(rows):
        prob[r, 4:6] = 0.9 if k % 2 else 0.7
    warped, mism, kinds = metrics.warp_ground_truth(prob, truth, 0.5)
    assert sorted(map(tuple, mism.tolist())) == [(r, 5) for r in rows]
    assert all(KINDS[k] == "merge" for k in kinds) and warped[rows, 4].all()


def test_max_passes_stops_the_warp_after_that_many_passes():
    """A cell the prediction grows by two columns to the left. Pass 1 visits column 2 first
    (not simple: it touches no foreground), then column 3 (simple, next to the cell); pass 2
    flips column 2. max_passes=1 stops with column 2 left, 0 flips nothing, None runs on."""
    truth = np.zeros((8, 9), bool)
    truth[2:6, 4:7] = True
    pred = np.zeros_like(truth)
    pred[2:6, 2:7] = True
    prob = pred.astype(float)
    warped, mism, _ = metrics.warp_ground_truth(prob, truth, max_passes=1)
    assert sorted(map(tuple, mism.tolist())) == [(r, 2) for r in range(2, 6)]
    assert (warped == (truth | (np.arange(9) == 3) & pred)).all()
    warped, mism, _ = metrics.warp_ground_truth(prob, truth, max_passes=0)
    assert (warped == truth).all() and len(mism) == 8
    warped, mism, _ = metrics.warp_ground_truth(prob, truth)
    assert (warped == pred).all() and len(mism) == 0
    assert len(metrics.warp_ground_truth(prob, truth, max_passes=2)[1]) == 0
