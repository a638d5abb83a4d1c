"""Training on a challenge set's silver truth too (--silver, the challenge's "GT+ST" training):
which frames a run has, which it trains on and which it validates on, and the one-line errors.

The set here: sequence 01 with 12 frames (t000 ... t011), a silver mask for every frame and a
reference mask for the even ones (t000, t002, ..., t010); the reference of t008 leaves one cell
out (partial). Worked out beside each test: the slices are the 12 frames in time order, the
reference frames are slices 0, 2, 4, 6, 8, 10, and of those 8 is partial.
"""
import json

import numpy as np
import pytest
import tifffile

from tinyunet.commands import train as train_cmd
from tinyunet.data import DataError
from tinyunet.data.ctc import load_ctc
from tinyunet.data.images import DataNotFoundError
from tinyunet.data.selection import choose_data, default_block

from .conftest import run_example
from .test_cells import write_set


@pytest.fixture(scope="module")
def gtst(tmp_path_factory):
    folder = write_set(tmp_path_factory.mktemp("gtst") / "set", frames=range(12), partial=(8,))
    for t in range(1, 12, 2):                                  # odd frames: silver truth only
        (folder / "01_GT" / "SEG" / f"man_seg{t:03d}.tif").unlink()
    return folder


def test_with_silver_every_frame_with_a_mask_is_a_frame_in_time_order(gtst):
    frames = load_ctc(gtst, silver=True)
    assert frames.names == [f"01/t{t:03d}" for t in range(12)]
    assert frames.silver == [t % 2 == 1 for t in range(12)]
    assert frames.partial == [t == 8 for t in range(12)]
    for t in (1, 7):                                           # a silver frame: its silver mask
        st = tifffile.imread(gtst / "01_ST" / "SEG" / f"man_seg{t:03d}.tif")
        np.testing.assert_array_equal(frames.instances[t], st)
    gt = tifffile.imread(gtst / "01_GT" / "SEG" / "man_seg004.tif")
    np.testing.assert_array_equal(frames.instances[4], gt)     # a reference frame: its reference
    assert (frames.instances[8] == -1).any()                   # the cell it leaves out: unannotated
    plain = load_ctc(gtst)                                     # without: the reference frames
    assert plain.names == [f"01/t{t:03d}" for t in range(0, 12, 2)] and not any(plain.silver)


def test_the_default_block_runs_from_the_first_default_validation_frame_to_the_end(gtst):
    # reference slices 0, 2, 4, 6, 8, 10; without --silver the last sixth of the 6 (one frame),
    # the last fully annotated one, validates: slice 10. The block: 10-11.
    record, (train, val), description = choose_data(str(gtst), silver=True)
    assert (record["train_slices"], record["val_slices"]) == ("0-9", "10-11")
    assert record["silver"] is True
    assert len(train[0]) == 10 and len(val[0]) == 1            # slice 11 is silver: not scored
    frames = load_ctc(gtst, silver=True)
    np.testing.assert_array_equal(val[1][0], frames.instances[10])
    np.testing.assert_array_equal(train[1][9], frames.instances[9])   # silver frames train
    assert description.endswith("6 annotated frames, 1 partial and 6 frames of silver truth")
    # the rule on the flags alone: reference slices 0, 2, 4 (4 partial): 2 validates by default
    assert default_block([False, False, False, False, True, False],
                         [False, True, False, True, False, True]) == [2, 3, 4, 5]


def test_the_default_block_is_not_the_last_sixth_of_all_the_frames(tmp_path):
    # 12 frames, reference masks for 0, 2, 4, 6 only (the rest silver). The reference frames'
    # default validation frame is 6 (the last of the 4, none partial), so the block is 6-11,
    # not the last sixth of the 12 frames (10-11, which holds no reference frame at all).
    folder = write_set(tmp_path / "set", frames=range(12))
    for t in (1, 3, 5, 7, 8, 9, 10, 11):
        (folder / "01_GT" / "SEG" / f"man_seg{t:03d}.tif").unlink()
    record, (train, val), _ = choose_data(str(folder), silver=True)
    assert (record["train_slices"], record["val_slices"]) == ("0-5", "6-11")
    assert len(train[0]) == 6 and len(val[0]) == 1             # 6 is the one reference frame


def test_a_block_given_is_held_out_whole_and_validates_on_its_full_reference_frames(gtst):
    record, (train, val), _ = choose_data(str(gtst), val_slices="3-9", silver=True)
    # slices 3-9 hold the reference frames 4, 6, 8; 8 is partial: 4 and 6 validate
    assert (record["train_slices"], record["val_slices"]) == ("0-2,10-11", "3-9")
    assert len(train[0]) == 5 and len(val[0]) == 2
    frames = load_ctc(gtst, silver=True)
    np.testing.assert_array_equal(val[1], frames.instances[[4, 6]])
    record, (train, val), _ = choose_data(str(gtst), train_slices="0-5", silver=True)
    assert record["val_slices"] == "6-11" and len(val[0]) == 2    # the rest: 6 and 10 score


def test_a_block_without_a_full_reference_frame_is_refused_naming_the_reference_frames(gtst):
    with pytest.raises(DataError) as e:
        choose_data(str(gtst), val_slices="7-9", silver=True)      # 8 (partial) and silver ones
    assert str(e.value) == (
        "--val-slices 7-9: with --silver the run validates on the fully annotated reference "
        "frames of the block held out, and this block has none; the reference frames are the "
        "slices 0 (01/t000), 2 (01/t002), 4 (01/t004), 6 (01/t006), 10 (01/t010)")


def test_a_resumed_run_keeps_its_silver_choice(gtst):
    record, data, _ = choose_data(str(gtst), silver=True)
    again, data2, _ = choose_data(None, run=record, run_name="runs/r")   # --silver left out
    assert again == record and len(data2[0][0]) == len(data[0][0]) == 10
    plain, _, _ = choose_data(str(gtst))
    with pytest.raises(DataError, match=r"^--silver: the run in runs/r trained without the "
                                        r"silver truth; leave out --silver"):
        choose_data(None, run=plain, run_name="runs/r", silver=True)
    assert "silver" not in plain                               # older records read as without
    with pytest.raises(DataError) as e:                        # silver=False, a caller's "without"
        choose_data(None, run=record, run_name="runs/r", silver=False)
    assert str(e.value) == ("--silver: the run in runs/r trained with the silver truth; leave "
                            "out --silver to resume it as it was, or start a new run")


def test_silver_needs_a_challenge_set_with_silver_masks(gtst, tmp_path):
    with pytest.raises(DataError, match=r"^--silver: the built-in synthetic set is not a cell "
                                        r"tracking challenge set \(sequences NN/ with NN_GT/SEG/"):
        choose_data("synthetic", silver=True)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    tifffile.imwrite(pairs / "a_image.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(pairs / "a_mask.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(DataError, match=rf"^--silver: {pairs} is not a cell tracking challenge"):
        choose_data(str(pairs), silver=True)
    bare = write_set(tmp_path / "bare", frames=(0, 1), silver=False)
    with pytest.raises(DataNotFoundError, match=r"^--silver: .*01_ST/SEG holds no man_segTTT.tif "
                                                r"silver-truth masks"):
        load_ctc(bare, silver=True)


def test_the_train_command_trains_with_silver_and_records_it(gtst, tmp_path, capsys,
                                                             monkeypatch):
    from tinyunet import config
    monkeypatch.setitem(config.PRESETS, "cells", dict(base_channels=4, depth=2, tile=92, lr=0.01,
                                                      optimizer="adam", border=1, log_every=1))
    out = tmp_path / "runs"
    code, printed, err = run_example(train_cmd.main, ["--data", gtst, "--silver", "--preset",
                                                      "cells", "--val-slices", "3-9", "--steps",
                                                      "2", "--val-every", "2", "--out", out],
                                     capsys)
    assert code == 0, err
    assert ("5 training and 2 validation slices of 64x64 (slices 0-2,10-11 and 3-9); the "
            "validation slices are the reference frames of slices 3-9, held out of training "
            "with their silver truth") in printed
    run = next(out.glob("*/config.json"))
    assert json.loads(run.read_text())["data"]["silver"] is True
