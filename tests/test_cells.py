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
    images, inst, names, partial = load_ctc(folder)
    assert images.dtype == np.uint8 and inst.dtype == np.int32 and inst.max() == 303
    assert names[:2] == ["01/t000", "01/t001"] and partial == [False, False, True] + [False] * 3
    assert (inst[2] == -1).any() and not (inst[0] == -1).any()
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
    with pytest.raises(DataError, match=message):
        load_ctc(folder)


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
