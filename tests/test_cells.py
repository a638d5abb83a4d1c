"""Touching cells (the paper's second experiment): instance masks to targets with separation
borders, the weight map on instances, partial annotations, cells from a prediction, the
challenge's SEG against a literal loop, the challenge's layout with its errors, and the three
commands end to end on a tiny challenge set."""
import json

import numpy as np
import pytest
import tifffile

from tinyunet import metrics
from tinyunet.commands import evaluate, predict
from tinyunet.commands import train as train_cmd
from tinyunet.data import DataError
from tinyunet.data.ctc import is_ctc_set, load_ctc, mark_unannotated
from tinyunet.data.selection import choose_data, default_split
from tinyunet.data.targets import instance_classes, targets
from tinyunet.instances import label_cells, separation_border

from .conftest import run_example


def two_cells(gap=0):
    """Two 10x10 squares side by side, `gap` px apart, in a 20 x (24 + gap) image."""
    inst = np.zeros((20, 24 + gap), np.int32)
    inst[5:15, 2:12] = 1
    inst[5:15, 12 + gap:22 + gap] = 2
    return inst


def test_separation_border_cuts_touching_cells_apart():
    inst = two_cells()
    border = separation_border(inst, 2)
    # the two columns on each side of the contact, and nothing else
    assert border.sum() == 2 * 2 * 10
    assert border[5:15, 10:14].all() and not border[:, :10].any() and not border[:, 14:].any()
    classes = instance_classes(inst, 2)
    assert classes[5:15, 10:14].max() == 0 and classes[7, 5] == 1
    # cells 1 px apart lose their facing column each; 2 px apart (the width) nothing
    assert separation_border(two_cells(gap=1), 2).sum() == 2 * 10
    assert not separation_border(two_cells(gap=2), 2).any()
    assert not separation_border(inst, 0).any()


def test_more_than_255_cells_stay_distinct():
    inst = np.zeros((64, 64), np.int32)
    for k in range(300):                              # 300 one-pixel-apart 1x2 cells
        r, c = divmod(k, 20)
        inst[3 * r + 1, 3 * c + 1:3 * c + 3] = k + 1
    inst[0, 0] = 256                                  # also one id above 255 next to cell 1
    inst[0, 1] = 1
    assert separation_border(inst, 1)[0, 0] and separation_border(inst, 1)[0, 1]
    cells = label_cells(instance_classes(inst, 0).astype(float), 0.5, grow=0)
    assert cells.max() == 300                        # 301 ids, 256 and 1 touch: one component


def test_weight_map_on_instances_weights_the_border_and_ignores_unannotated_cells():
    inst = two_cells()
    inst[0:3, 0:3] = -1                               # an unannotated cell
    classes, weights = targets(inst[None], "instances", "paper", w0=10, sigma=5, border=2)
    c, w = classes[0], weights[0]
    assert (w[0:3, 0:3] == 0).all() and (w[3:, :] > 0).all()
    # the separation band (background now) between the two cells gets the border term
    assert w[10, 11] > 5 * w[1, 20] and c[10, 11] == 0
    _, balanced = targets(inst[None], "instances", "balanced", border=2)
    assert balanced[0, 10, 11] < w[10, 11] and balanced[0, 0, 0] == 0
    _, none = targets(inst[None], "instances", "none", border=2)
    assert set(np.unique(none)) == {0.0, 1.0}
    # the border term sees two *cells*: one blob made of two ids is not one cell
    merged = (inst > 0).astype(np.int32)
    _, w_one = targets(merged[None], "instances", "paper", border=2)
    assert w_one[0, 10, 11] < w[10, 11]


def test_partial_frames_mark_the_cells_nobody_annotated():
    ref = two_cells(gap=6)
    ref[ref == 2] = 0                                 # the annotator drew cell 1 only
    silver = two_cells(gap=6)
    marked = mark_unannotated(ref, silver, margin=1)
    assert (marked[silver == 2] == -1).all() and (marked[ref == 1] == 1).all()
    assert marked[4, 19] == -1 and marked[0, 0] == 0      # the margin, not the background
    assert (mark_unannotated(two_cells(gap=6), silver) >= 0).all()   # complete: nothing marked


def test_label_cells_gives_the_cells_back_from_their_targets():
    inst = two_cells()
    cells = label_cells(instance_classes(inst, 2).astype(float), 0.5, grow=2)
    np.testing.assert_array_equal(cells > 0, inst > 0)    # the band filled, nothing more
    assert len(np.unique(cells)) == 3
    assert metrics.seg(cells, inst)["seg"] == 1.0
    lone = np.zeros((20, 20))
    lone[5:15, 5:15] = 1
    assert (label_cells(lone, grow=2) > 0).sum() == 100   # an outer boundary does not move
    noisy = lone.copy()
    noisy[0, 0] = 1
    assert label_cells(noisy, min_pixels=5).max() == 1    # specks dropped


def seg_by_hand(pred, ref):
    """The SEG measure as the challenge defines it, one reference cell at a time."""
    scores = []
    for p, r in zip(pred, ref):
        for i in np.unique(r[r > 0]):
            R = r == i
            score = 0.0
            for j in np.unique(p[p > 0]):
                S = p == j
                inter = np.logical_and(R, S).sum()
                if inter > 0.5 * R.sum():
                    score = inter / np.logical_or(R, S).sum()
            scores.append(score)
    return np.mean(scores) if scores else np.nan


def test_seg_equals_a_literal_loop_over_cells():
    rng = np.random.default_rng(0)
    ref = np.zeros((3, 40, 40), np.int32)
    ref[0, 2:12, 2:12], ref[0, 2:12, 12:22], ref[0, 25:35, 5:30] = 3, 7, 9   # ids not 1..n
    ref[1, 5:20, 5:20] = 1
    pred = np.zeros_like(ref)
    pred[0, 2:12, 2:22] = 5                          # merges 3 and 7: matches neither? 7? both
    pred[0, 26:35, 5:18], pred[0, 26:35, 18:30] = 1, 2   # splits 9
    pred[1, 5:20, 5:21] = 4                          # a good match
    pred[2, 0:5, 0:5] = 8                            # a frame with no reference cell
    for _ in range(3):
        res = metrics.seg(pred, ref)
        assert abs(res["seg"] - seg_by_hand(pred, ref)) <= 1e-12
        assert res["reference"] == 4 and res["predicted"] == 5
        pred = np.where(rng.random(pred.shape) < 0.05, 0, pred)   # ragged edges
    assert metrics.seg(np.zeros((5, 5), int), np.zeros((5, 5), int))["reference"] == 0
    assert np.isnan(metrics.seg(np.zeros((5, 5), int), np.zeros((5, 5), int))["seg"])
    assert metrics.seg(ref, ref)["seg"] == 1.0 and metrics.seg(ref, ref)["f1"] == 1.0
    with pytest.raises(ValueError, match="must be integers"):
        metrics.seg(ref.astype(float), ref)


def test_detection_scores_and_merges_and_splits():
    ref = np.zeros((1, 40, 40), np.int32)
    ref[0, 2:12, 2:12], ref[0, 2:12, 12:22], ref[0, 25:35, 5:30] = 1, 2, 3
    pred = np.zeros_like(ref)
    pred[0, 2:12, 2:22] = 1                          # merges 1 and 2
    pred[0, 25:35, 5:13], pred[0, 25:35, 13:21], pred[0, 25:35, 21:30] = 2, 3, 4   # splits 3
    res = metrics.seg(pred, ref)
    assert (res["tp"], res["reference"], res["predicted"]) == (0, 3, 4)
    assert res["f1"] == 0 and res["ap50"] == 0
    ms = metrics.merged_and_split_cells(pred, ref)[0]
    assert ms == dict(merged=[1, 2], split=[3], merges=2, splits=1)
    assert metrics.seg(ref, ref)["ap50"] == 1.0


def write_set(folder, frames=(0, 1, 2, 3, 4, 5), size=64, partial=(), silver=True):
    """A tiny challenge set: sequence 01, noisy bright squares as cells, some touching."""
    rng = np.random.default_rng(1)
    (folder / "01").mkdir(parents=True)
    (folder / "01_GT" / "SEG").mkdir(parents=True)
    if silver:
        (folder / "01_ST" / "SEG").mkdir(parents=True)
    for t in frames:
        inst = np.zeros((size, size), np.uint16)
        for k, (r, c) in enumerate([(8, 8), (8, 24), (36, 30), (40, 8)]):
            inst[r + t % 3:r + 14 + t % 3, c:c + 16] = k + 300     # ids above 255
        image = np.clip(60 + 120 * (inst > 0) + rng.normal(0, 10, inst.shape), 0, 255)
        image[separation_border(inst.astype(np.int32), 1)] = 90
        tifffile.imwrite(folder / "01" / f"t{t:03d}.tif", image.astype(np.uint8))
        ref = inst.copy()
        if t in partial:
            ref[ref == 302] = 0
        tifffile.imwrite(folder / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", ref, compression="lzw")
        if silver:
            tifffile.imwrite(folder / "01_ST" / "SEG" / f"man_seg{t:03d}.tif", inst)
    return folder


def test_loading_a_challenge_set(tmp_path):
    folder = write_set(tmp_path / "set", partial=(2,))
    assert is_ctc_set(folder)
    images, inst, names, partial, silver = load_ctc(folder)
    assert images.dtype == np.uint8 and inst.dtype == np.int32 and inst.max() == 303
    assert names[:2] == ["01/t000", "01/t001"] and partial == [False, False, True] + [False] * 3
    assert (inst[2] == -1).any() and not (inst[0] == -1).any()
    assert silver == [False] * 6                               # every mask a reference one
    record, (train, val), _ = choose_data(str(folder))
    assert record["labels"] == "instances" and record["val_slices"] == "5"
    assert default_split(9, [False] * 8 + [True]) == ([0, 1, 2, 3, 4, 5, 6, 8], [7])


def test_one_of_the_slice_flags_makes_the_other_the_rest_of_the_data(tmp_path):
    folder = write_set(tmp_path / "set", partial=(2,))          # 6 frames, frame 2 partial
    record, _, _ = choose_data(str(folder), val_slices="3,4")     # never trained on
    assert (record["train_slices"], record["val_slices"]) == ("0-2,5", "3-4")
    record, _, _ = choose_data(str(folder), train_slices="0-1")   # the partial frame not scored
    assert (record["train_slices"], record["val_slices"]) == ("0-1", "3-5")
    record, _, _ = choose_data(str(folder), train_slices="0-4", val_slices="4")   # as given
    assert (record["train_slices"], record["val_slices"]) == ("0-4", "4")
    with pytest.raises(DataError, match="none is left to train on"):
        choose_data(str(folder), val_slices="0-5")
    with pytest.raises(DataError, match="no fully annotated slice"):
        choose_data(str(folder), train_slices="0,1,3-5")


@pytest.mark.parametrize("case, message", [
    ("no masks", "holds no reference segmentations"),
    ("no frame", "man_seg004.tif has no frame: .*t004.tif does not exist"),
    ("size", "man_seg001.tif is 32x64 but its frame t001.tif is 64x64"),
    ("float", "instance labels must be whole numbers"),
    ("colour", r"man_seg001.tif: a colour image \(RGB\) where a label image \(one grey value "
               r"per class or cell\) is expected"),      # refused, not averaged to grey ids
])
def test_bad_challenge_sets_get_one_clear_line(tmp_path, case, message):
    folder = write_set(tmp_path / "set", frames=(0, 1, 2))
    seg = folder / "01_GT" / "SEG"
    if case == "no masks":
        for p in seg.iterdir():
            p.unlink()
        seg.rename(folder / "01_GT" / "TRA")
    elif case == "no frame":
        tifffile.imwrite(seg / "man_seg004.tif", np.zeros((64, 64), np.uint16))
    elif case == "size":
        tifffile.imwrite(seg / "man_seg001.tif", np.zeros((32, 64), np.uint16))
    elif case == "float":
        tifffile.imwrite(seg / "man_seg001.tif", np.full((64, 64), 0.5, np.float32))
    elif case == "colour":
        tifffile.imwrite(seg / "man_seg001.tif", np.zeros((64, 64, 3), np.uint8),
                         photometric="rgb")
    with pytest.raises(DataError, match=message):
        load_ctc(folder)


def test_sequences_of_different_sizes_are_refused_naming_the_sizes(tmp_path):
    """A set's frames stack into one array: sequences of two sizes (01: 64x64, 02: 32x32) are
    one line that names the folder and both sizes, smallest first."""
    folder = write_set(tmp_path / "set", frames=(0, 1))
    other = write_set(tmp_path / "other", frames=(0,), size=32)
    for part in ("01", "01_GT", "01_ST"):
        (other / part).rename(folder / part.replace("01", "02"))
    with pytest.raises(DataError) as e:
        load_ctc(folder)
    assert str(e.value) == (f"{folder}: the frames have different sizes [(32, 32), (64, 64)]: "
                            f"train on one sequence size at a time")


def test_train_predict_and_score_cells_from_the_command_line(tmp_path, capsys, monkeypatch):
    from tinyunet import config
    monkeypatch.setitem(config.PRESETS, "cells", dict(base_channels=4, depth=2, tile=92, lr=0.01,
                                                      optimizer="adam", warmup=2, ema=0.9,
                                                      border=1, min_cell=10, log_every=5))
    folder = write_set(tmp_path / "set", partial=(2,))
    code, out, err = run_example(train_cmd.main, ["--data", folder, "--preset", "cells",
                                                  "--steps", "30", "--val-every", "10", "--out",
                                                  tmp_path / "runs"], capsys)
    assert code == 0, err
    assert "1 partial" in out and "seg " in out
    run = next((tmp_path / "runs").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["labels"], cfg["border"], cfg["min_cell"]) == ("instances", 1, 10)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all("seg" in r["val"] for r in log if "val" in r)
    code, out, err = run_example(predict.main, [run / "best.npz", folder / "01", "--instances",
                                                "--out", tmp_path / "pred"], capsys)
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "pred" / "t003_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (64, 64)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir())[:2] == ["t000_labels.tif",
                                                                         "t001_labels.tif"]
    code, out, err = run_example(evaluate.main, ["--seg", tmp_path / "pred", folder / "01_GT" /
                                                 "SEG", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    pred = [tifffile.imread(tmp_path / "pred" / f"t{t:03d}_labels.tif") for t in range(6)]
    ref = [tifffile.imread(folder / "01_GT" / "SEG" / f"man_seg{t:03d}.tif") for t in range(6)]
    assert res["seg"] == pytest.approx(metrics.seg(np.stack(pred), np.stack(ref))["seg"],
                                       abs=1e-12)
    assert [f["frame"] for f in res["frames"]] == list(range(6))
    # a reference frame without a prediction is one line
    (tmp_path / "pred" / "t004_labels.tif").unlink()
    code, _, err = run_example(evaluate.main, ["--seg", tmp_path / "pred",
                                               folder / "01_GT" / "SEG"], capsys)
    assert code == 2 and "no prediction for the reference frames [4]" in err


def test_a_cell_at_the_image_border_keeps_its_edge():
    inst = np.zeros((10, 10), np.int32)
    inst[:, :5] = 70000                               # ids beyond uint16, touching the border
    assert not separation_border(inst, 2).any()


def test_a_silver_cell_covered_by_less_than_half_is_unannotated(tmp_path):
    """A silver-truth cell that the reference covers by at most half is marked -1, not only an
    untouched one; one covered by more than half is annotated."""
    silver = np.zeros((20, 20), np.int32)
    silver[5:15, 5:15] = 7                            # one 10x10 silver cell: 100 px
    for cols, covered, marked in [(4, 40, True), (5, 50, True), (6, 60, False)]:
        ref = np.zeros_like(silver)
        ref[5:15, 5:5 + cols] = 1                     # the annotator drew `covered` px of it
        out = mark_unannotated(ref, silver, margin=0)
        # 40 or 50 of 100 px: not more than half, so the rest of the cell is unannotated
        assert (out[silver == 7] == -1).sum() == (100 - covered if marked else 0), covered
        assert (out[ref == 1] == 1).all()             # never over the reference cell
    # load_ctc: a frame whose reference draws a third of one cell is partial
    folder = write_set(tmp_path / "set", frames=(0, 1))
    path = folder / "01_GT" / "SEG" / "man_seg001.tif"
    ref = tifffile.imread(path)
    _, cols = np.nonzero(ref == 302)                  # a 14 x 16 cell
    ref[(ref == 302) & (np.arange(64)[None, :] >= cols.min() + 5)] = 0   # 5 of its 16 columns
    tifffile.imwrite(path, ref)
    _, inst, _, partial, _ = load_ctc(folder)
    assert partial == [False, True] and (inst[1][ref == 302] == 302).all()


def test_the_default_split_never_validates_on_a_partial_frame():
    """By default the last sixth of the fully annotated frames validates, never a partial one,
    even when few frames are fully annotated."""
    # 12 frames, 2 validate: the last two full ones (9 and 11 are partial)
    partial = [False] * 12
    partial[9] = partial[11] = True
    assert default_split(12, partial) == ([0, 1, 2, 3, 4, 5, 6, 7, 9, 11], [8, 10])
    # 2 frames, the last partial: the first validates, the partial one trains
    assert default_split(2, [False, True]) == ([1], [0])
    # 12 frames, 2 would validate but only frames 0 and 1 are full: one of them validates
    assert default_split(12, [False, False] + [True] * 10) == ([0] + list(range(2, 12)), [1])
    for n in range(2, 14):                            # every k+1-th frame partial
        for k in range(1, n):
            partial = [i % (k + 1) == k for i in range(n)]
            train, val = default_split(n, partial)
            assert not any(partial[i] for i in val) and sorted(train + val) == list(range(n))
    assert default_split(3, [True] * 3) == ([0, 1], [2])   # none full: the last validates


def test_seg_leaves_out_predicted_pixels_in_unannotated_regions():
    """Predicted pixels where the reference is -1 (unannotated) count nowhere: not in a cell's
    union, not as a predicted cell."""
    ref = np.zeros((20, 30), np.int32)
    ref[5:15, 0:10] = 1                               # a 10x10 reference cell
    ref[:, 10:30] = -1                                # the rest of the frame: unannotated
    pred = np.zeros_like(ref)
    pred[5:15, 0:20] = 4                              # cell 1 and 100 px of unannotated frame
    pred[2:8, 22:28] = 5                              # a cell entirely in the unannotated part
    res = metrics.seg(pred, ref)
    # scored: S = 100 px (the 100 unannotated px dropped), |R n S| = |R u S| = 100: IoU 1
    # (counting them: 100 / 200 = 0.5, no match at IoU > 0.5); cell 5 is not predicted at all
    assert res["seg"] == 1.0 and res["predicted"] == 1 and res["tp"] == 1
    assert res["ap50"] == 1.0 and res["f1"] == 1.0
    assert metrics.merged_and_split_cells(pred, ref)[0]["merges"] == 0


def squares(ids, size=10, gap=2):
    """A (1, 12, W) frame of size x size squares in a row, `gap` px apart, with these ids."""
    frame = np.zeros((1, size + 2, len(ids) * (size + gap)), np.int32)
    for k, i in enumerate(ids):
        frame[0, 1:1 + size, k * (size + gap):k * (size + gap) + size] = i
    return frame


def test_ap50_counts_missed_and_false_cells():
    """ap50 = TP / (TP + FP + FN): a missed reference cell lowers it as a false cell does."""
    ref = squares([1, 2, 3, 4])
    missed = np.where(np.isin(ref, [1, 2]), ref, 0)   # two of four cells found exactly
    res = metrics.seg(missed, ref)
    # TP 2, FP 0, FN 2: ap50 2 / 4, F1 4 / 6, precision 1, recall 1/2
    assert (res["tp"], res["predicted"], res["reference"]) == (2, 2, 4)
    assert res["ap50"] == pytest.approx(0.5) and res["f1"] == pytest.approx(2 / 3)
    assert res["precision"] == 1.0 and res["recall"] == 0.5
    extra = missed.copy()
    extra[0, 0, :] = 9                                # and a false cell along the top row
    res = metrics.seg(extra, ref)
    # TP 2, FP 1, FN 2: ap50 2 / 5, F1 4 / 7
    assert res["ap50"] == pytest.approx(2 / 5) and res["f1"] == pytest.approx(4 / 7)


def test_a_cell_merges_reference_cells_only_when_it_covers_more_than_half_of_each():
    """A predicted cell merges two reference cells only when it covers more than half of
    each: 60 of 100 px merges, 50 or 40 does not."""
    ref = np.zeros((1, 12, 24), np.int32)
    ref[0, 1:11, 1:11], ref[0, 1:11, 13:23] = 1, 2    # two 10x10 cells, 2 px apart
    for cols, merged in [(6, [1, 2]), (5, []), (4, [])]:
        pred = np.zeros_like(ref)
        pred[0, 1:11, 1:13 + cols] = 1                # all of cell 1 and `cols` columns of 2
        ms = metrics.merged_and_split_cells(pred, ref)[0]
        assert ms["merged"] == merged and ms["merges"] == len(merged), cols


@pytest.mark.parametrize("threshold, seg_score, predicted", [(0.5, 1.0, 2), (0.7, 0.5, 1)])
def test_validation_finds_cells_at_the_runs_threshold(tmp_path, threshold, seg_score, predicted):
    """A run validates the cells of P(cell) > its threshold: of two reference cells, one sure
    (0.9) and one faint (0.6), both are found at 0.5 and the faint one is lost at 0.7 (SEG
    counts it 0)."""
    from tinyunet.train import Trainer

    from .conftest import small_config
    ref = np.zeros((1, 48, 48), np.int32)
    ref[0, 4:20, 4:20] = 1
    ref[0, 28:44, 28:44] = 2
    prob = np.zeros((1, 48, 48), np.float32)
    prob[0, 4:20, 4:20] = 0.9                   # cell 1: sure
    prob[0, 28:44, 28:44] = 0.6                 # cell 2: faint, a cell at 0.5 only
    images = (60 + 120 * (ref > 0)).astype(np.uint8)
    cfg = small_config(labels="instances", border=1, threshold=threshold,
                       data=dict(source="cells", labels="instances"))
    trainer = Trainer(cfg, (images, ref), (images, ref), tmp_path / "run", progress=False)
    trainer.predict = lambda images, tta=False, model=None: prob
    res = trainer.validate()
    assert res["seg"] == pytest.approx(seg_score)
    assert res["predicted"] == predicted


def test_instance_data_without_a_preset_train_with_the_cells_preset(tmp_path):
    """A new run on instance labels without --preset takes the cells preset (membranes: cpu,
    the synthetic set: tiny); --preset still wins."""
    for labels, source, preset in [("instances", str(tmp_path), "cells"),
                                   ("membranes", str(tmp_path), "cpu"),
                                   ("membranes", "synthetic", "tiny")]:
        data = dict(source=source, labels=labels)
        cfg = train_cmd.make_config(train_cmd.build_parser().parse_args([]), None, "cpu", data)
        assert (cfg.preset, cfg.labels) == (preset, labels)
    cells = train_cmd.make_config(train_cmd.build_parser().parse_args([]), None, "cpu",
                                  dict(source=str(tmp_path), labels="instances"))
    assert (cells.border, cells.min_cell, cells.threshold) == (2, 100, 0.7)   # the preset's own
    given = train_cmd.make_config(train_cmd.build_parser().parse_args(["--preset", "tiny"]),
                                  None, "cpu", dict(source=str(tmp_path), labels="instances"))
    assert given.preset == "tiny" and given.labels == "instances"
