"""The rules of the cell metrics (tinyunet.metrics.cells), each on a small hand-made frame with
its answer worked out beside it: the inputs refused and what each message says, SEG's "more
than half" match, the detection scores and their values when there is nothing to count, the
counts and per-cell scores returned, and when a reference cell is merged or split."""
import warnings

import numpy as np
import pytest

from tinyunet import metrics


def row(ids, size=10, gap=2):
    """A (12, W) frame of size x size squares in a row, `gap` px apart, with these ids."""
    frame = np.zeros((size + 2, len(ids) * (size + gap)), np.int32)
    for k, i in enumerate(ids):
        frame[1:1 + size, k * (size + gap):k * (size + gap) + size] = i
    return frame


# --- the inputs refused: one line saying what was wrong and what is valid -------------------

@pytest.mark.parametrize("pred, ref, message", [
    # 2 frames against 3
    (np.zeros((2, 5, 5), int), np.zeros((3, 5, 5), int),
     r"^2 predicted frames but 3 reference frames$"),
    # one frame each, of two sizes
    (np.zeros((5, 5), int), np.zeros((5, 6), int),
     r"predicted labels \(5, 5\) and reference labels \(5, 6\) must be label images \(H, W\) "
     r"or stacks \(N, H, W\) of one shape"),
    # a list of 3-D "frames" of one shape: not label images
    ([np.zeros((2, 5, 5), int)], [np.zeros((2, 5, 5), int)],
     r"predicted labels \(2, 5, 5\) and reference labels \(2, 5, 5\) must be label images"),
    # a list of 1-D "frames"
    ([np.zeros(5, int)], [np.zeros(5, int)],
     r"predicted labels \(5,\) and reference labels \(5,\) must be label images"),
    # float labels: the message names the side that is wrong
    (np.zeros((5, 5), float), np.zeros((5, 5), int),
     r"^predicted labels must be integers \(0 = background, one id per cell\), got float64$"),
    (np.zeros((5, 5), int), np.zeros((5, 5), np.float32),
     r"^reference labels must be integers \(0 = background, one id per cell\), got float32$"),
])
@pytest.mark.parametrize("score", [metrics.seg, metrics.merged_and_split_cells])
def test_bad_inputs_are_refused_in_one_line(score, pred, ref, message):
    with pytest.raises(ValueError, match=message):
        score(pred, ref)


def test_integer_unsigned_and_boolean_labels_are_accepted():
    ref = row([1, 2])
    for dtype in (np.int8, np.int64, np.uint8, np.uint16):
        assert metrics.seg(ref.astype(dtype), ref)["seg"] == 1.0, dtype
    one = row([1])
    assert metrics.seg(one > 0, one)["seg"] == 1.0    # a boolean mask is one cell (id 1)


def test_cell_ids_are_compared_exactly_however_large():
    """Ids above 2**53 (beyond float64's integers) stay distinct, also when the prediction is
    uint64 and the reference int64 (stacking the two would have gone through float64)."""
    big = 2 ** 53
    ref = np.zeros((4, 8), np.int64)
    ref[:, :4], ref[:, 4:] = big + 1, big + 3         # float64 would make both 2**53 + 0/4
    for pred in (ref, ref.astype(np.uint64)):
        res = metrics.seg(pred, ref)
        assert res["seg"] == 1.0 and res["tp"] == 2 and res["matched"] == 2
        assert [c[1] for c in res["per_cell"]] == [big + 1, big + 3]
        assert metrics.merged_and_split_cells(pred, ref)[0]["merged"] == []
    swapped = np.where(ref == big + 1, big + 3, big + 1)
    assert metrics.seg(swapped, ref)["seg"] == 1.0   # the ids need not agree, only the cells


# --- SEG ------------------------------------------------------------------------------------

def test_a_reference_cell_covered_by_exactly_half_has_no_match():
    """R and S match only when |R n S| > 0.5 |R|: exactly half is not a match (score 0)."""
    ref = row([1])                                    # R: 10x10 = 100 px in columns 0-9
    for cols, score in [(5, 0.0), (6, 0.6)]:
        pred = np.zeros_like(ref)
        pred[1:11, 0:cols] = 3                        # S inside R: |R n S| = 10 cols, |R u S| = 100
        res = metrics.seg(pred, ref)
        assert res["seg"] == pytest.approx(score) and res["matched"] == (score > 0), cols
        assert res["per_cell"] == [(0, 1, pytest.approx(score))]


def test_seg_returns_its_counts_and_per_cell_scores():
    """'matched' counts the reference cells with a SEG match, over all frames; 'per_cell' is
    (frame, reference id, score) in frame and id order."""
    f0 = row([4, 2, 7])                               # ids not in order, three 100-px cells
    p0 = np.zeros_like(f0)
    p0[f0 == 4] = 1                                   # cell 4 found exactly: 1
    p0[1:11, 12:20] = 2                               # 80 of cell 2's 100 px: 80 / 100
    p0[1:11, 24:28] = 3                               # 40 of cell 7's: no match, 0
    f1 = row([5, 0])
    p1 = np.zeros_like(f1)                            # cell 5 not found: 0
    res = metrics.seg([p0, p1], [f0, f1])
    assert res["matched"] == 2 and res["reference"] == 4 and res["predicted"] == 3
    assert res["per_cell"] == [(0, 2, 0.8), (0, 4, 1.0), (0, 7, 0.0), (1, 5, 0.0)]
    assert res["seg"] == pytest.approx((0.8 + 1.0) / 4)


def test_an_empty_reference_scores_nan_without_a_warning():
    """No reference cell: SEG is nan, said quietly (no NumPy 'mean of empty slice')."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = metrics.seg(row([1]), np.zeros_like(row([1])))
    assert np.isnan(res["seg"]) and res["per_cell"] == []


# --- the detection scores -------------------------------------------------------------------

def test_detection_scores_with_as_many_predicted_as_reference_cells():
    """Two reference cells, two predicted: one exact (IoU 1), one over 4 of the other's 10
    columns and 2 beyond it (IoU 40 / 120). TP 1, FP 1, FN 1: F1 = 2 / 4, ap50 = 1 / 3,
    precision = recall = 1 / 2."""
    ref = row([1, 2])
    pred = np.zeros_like(ref)
    pred[ref == 1] = 1
    pred[1:11, 18:24] = 2                             # cell 2 is columns 12-21
    res = metrics.seg(pred, ref)
    assert (res["tp"], res["predicted"], res["reference"]) == (1, 2, 2)
    assert res["f1"] == pytest.approx(0.5) and res["ap50"] == pytest.approx(1 / 3)
    assert res["precision"] == pytest.approx(0.5) and res["recall"] == pytest.approx(0.5)


def test_precision_counts_false_cells():
    """TP 2 of 3 predicted cells (a false one along the top row): precision 2 / 3, recall 1."""
    ref = row([1, 2])
    pred = ref.copy()
    pred[0, :] = 9
    res = metrics.seg(pred, ref)
    assert res["precision"] == pytest.approx(2 / 3) and res["recall"] == 1.0
    assert res["ap50"] == pytest.approx(2 / 3) and res["f1"] == pytest.approx(4 / 5)


def test_detection_scores_when_there_is_nothing_to_count():
    """Nothing to find and nothing found is a perfect detection (1); no predicted cell has no
    false one (precision 1) and no reference cell has none missed (recall 1)."""
    empty, cells = np.zeros((12, 24), np.int32), row([1, 2])
    res = metrics.seg(empty, empty)
    assert (res["f1"], res["ap50"], res["precision"], res["recall"]) == (1.0, 1.0, 1.0, 1.0)
    unannotated = np.full_like(cells, -1)             # a frame nobody annotated: nothing counts
    assert metrics.seg(cells, unannotated)["ap50"] == 1.0
    res = metrics.seg(empty, cells)                   # every cell missed
    assert (res["f1"], res["ap50"], res["precision"], res["recall"]) == (0.0, 0.0, 1.0, 0.0)
    res = metrics.seg(cells, empty)                   # every cell false
    assert (res["f1"], res["ap50"], res["precision"], res["recall"]) == (0.0, 0.0, 0.0, 1.0)


# --- merged and split cells -----------------------------------------------------------------

def test_cells_each_found_by_their_own_predicted_cell_are_not_merged():
    ref = row([1, 2, 3])
    pred = np.where(ref > 0, ref + 10, 0)             # three predicted cells, one per cell
    assert metrics.merged_and_split_cells(pred, ref)[0] == dict(merged=[], split=[], merges=0,
                                                                splits=0)


def test_a_cell_is_covered_by_the_predicted_cell_with_the_largest_part_of_it():
    """Cell 1 is cut 20 / 80 between predicted cells 1 and 2; predicted 2 also covers all of
    cell 2. Cell 1's cover is 2 (80 px, not the lower id's 20), so 2 merges cells 1 and 2; and
    cell 1 is split (20 and 80 px, both at least a fifth of it)."""
    ref = row([1, 2])
    pred = np.zeros_like(ref)
    pred[1:11, 0:2] = 1                               # 20 px of cell 1
    pred[1:11, 2:22] = 2                              # the other 80 px, the gap and cell 2
    assert metrics.merged_and_split_cells(pred, ref)[0] == dict(merged=[1, 2], split=[1],
                                                                merges=2, splits=1)


@pytest.mark.parametrize("cut, split", [(1, []), (2, [1]), (5, [1])])
def test_a_cell_is_split_in_two_when_each_part_covers_at_least_min_fraction(cut, split):
    """Cell 1 (100 px) cut at column `cut` into two predicted cells: 10 px (a tenth) is not a
    part, 20 px (a fifth, the default min_fraction, exactly) is: two parts are a split."""
    ref = row([1])
    pred = np.zeros_like(ref)
    pred[1:11, 0:cut], pred[1:11, cut:10] = 1, 2
    ms = metrics.merged_and_split_cells(pred, ref)[0]
    assert ms["split"] == split and ms["splits"] == len(split) and ms["merged"] == []


def test_min_fraction_is_a_fraction_of_the_cell():
    """min_fraction 0.25 of a 100-px cell is 25 px: parts of 25 and 75 split it, 24 and 76
    do not (a 4-px speck of another cell is not a part at any size of cell)."""
    ref = np.zeros((12, 12), np.int32)
    ref[1:11, 1:11] = 1                               # 100 px
    for n, split in [(25, [1]), (24, []), (4, [])]:
        pred = np.where(ref > 0, 1, 0)
        rr, cc = np.nonzero(ref)
        pred[rr[:n], cc[:n]] = 2                      # the first n px (row by row) to cell 2
        ms = metrics.merged_and_split_cells(pred, ref, min_fraction=0.25)[0]
        assert ms["split"] == split, n
