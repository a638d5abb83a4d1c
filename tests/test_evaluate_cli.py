"""The evaluate command (examples/evaluate.py):
a good run on small synthetic stacks, and one clear line per mistake."""
import json

import numpy as np
import pytest
import tifffile

from tinyunet.commands import evaluate

from .conftest import run_example


@pytest.fixture
def stacks(tmp_path):
    """Labels (4, 24, 28): cells separated by 1-px membranes; PROBS: slices 1 and 2 of it,
    slightly blurred, as float32 P(cell)."""
    labels = np.full((4, 24, 28), 255, np.uint8)
    labels[:, :, [9, 19]] = 0
    labels[:, [7, 15], :] = 0
    probs = np.where(labels[1:3] == 255, 0.9, 0.1).astype(np.float32)
    probs[1, 3, 3] = 0.4                                 # one uncertain pixel
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    tifffile.imwrite(tmp_path / "probs.tif", probs, photometric="minisblack")
    return tmp_path


def run(argv, capsys):
    """(exit status, stdout, stderr) of examples/evaluate.py with argv."""
    return run_example(evaluate.main, argv, capsys)


def test_good_run_prints_the_table_and_json(stacks, capsys):
    code, out, err = run([stacks / "probs.tif", stacks / "labels.tif", "--slices", "1-2"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["slice", "pixel", "err", "Rand", "err", "warping"]
    assert [l.split()[0] for l in lines[1:5]] == ["1", "2", "stack", "t"]
    assert float(lines[3].split()[1]) == pytest.approx(0.0)   # pixel error of a perfect map
    code, out, _ = run([stacks / "probs.tif", stacks / "labels.tif", "--slices", "1,2",
                        "--json"], capsys)
    res = json.loads(out)
    assert code == 0 and res["slices"] == [1, 2] and len(res["per_slice"]) == 2
    assert res["warping_error"] == 0 and res["v_rand"] == pytest.approx(1.0)


def test_a_folder_of_images_and_a_full_stack(stacks, capsys):
    folder = stacks / "probs_dir"
    folder.mkdir()
    full = np.where(tifffile.imread(stacks / "labels.tif") == 255, 230, 20).astype(np.uint8)
    for k, img in enumerate(full):
        tifffile.imwrite(folder / f"slice_{k:02d}.tif", img)      # 8-bit: value / 255
    code, out, _ = run([folder, stacks / "labels.tif", "--slices", "2-3", "--json"], capsys)
    assert code == 0 and json.loads(out)["pixel_error"] == 0


@pytest.mark.parametrize("case, expect", [
    ("missing", "no such file"),
    ("slices", "PROBS has 2 slices but 3 label slices"),
    ("range", "--slices 3-9: slice 4 does not exist: the data has 4 slices (0-3)"),
    ("shape", "PROBS slices are 24x20 but LABELS slices are 24x28"),
    ("values", "values must be probabilities in [0, 1]"),
    ("labels", "label values must be 0 (membrane) and 255 or 1 (cell interior); found also [7]"),
    ("not an image", "cannot read it"),
])
def test_each_mistake_is_one_error_line(stacks, capsys, case, expect):
    probs, labels, extra = stacks / "probs.tif", stacks / "labels.tif", ["--slices", "1-2"]
    if case == "missing":
        probs = stacks / "nope.tif"
    elif case == "slices":
        extra = ["--slices", "1-3"]
    elif case == "range":
        extra = ["--slices", "3-9"]
    elif case == "shape":
        tifffile.imwrite(probs, np.zeros((2, 24, 20), np.float32), photometric="minisblack")
    elif case == "values":
        tifffile.imwrite(probs, np.full((2, 24, 28), 1.5, np.float32), photometric="minisblack")
    elif case == "labels":
        lab = tifffile.imread(labels)
        lab[1, 0, 0] = 7                                   # in a scored slice
        tifffile.imwrite(labels, lab, photometric="minisblack")
    elif case == "not an image":
        probs = stacks / "notes.tif"
        probs.write_text("not a tiff")
    code, out, err = run([probs, labels, *extra], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert expect in err


def test_an_inverted_stack_gets_a_warning_and_invert_fixes_it(stacks, capsys):
    inverted = 1.0 - tifffile.imread(stacks / "probs.tif")
    tifffile.imwrite(stacks / "probs.tif", inverted, photometric="minisblack")
    code, out, err = run([stacks / "probs.tif", stacks / "labels.tif", "--slices", "1-2"], capsys)
    assert code == 0 and "warning: PROBS looks inverted" in err and "--invert" in err
    code, out, err = run([stacks / "probs.tif", stacks / "labels.tif", "--slices", "1-2",
                          "--invert", "--json"], capsys)
    assert code == 0 and err == "" and json.loads(out)["pixel_error"] == 0
