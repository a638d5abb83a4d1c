"""examples/train_isbi.py as a user meets it: resume keeps the run's data and its numbers (real
Ctrl-C at several points), every bad input is one `error:` line with exit status 2, arguments are
checked before anything is written, the default split follows the data, TINYUNET_ISBI_DIR."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tinyunet import backend, config, rundir, train
from tinyunet.checkpoint import CheckpointError, load_checkpoint
from tinyunet.commands.cli import run_cli
from tinyunet.commands import train as script
from tinyunet.data import synthetic_em
from tinyunet.data.selection import default_split
from tinyunet.errors import UserError
from tinyunet.model import UNet

from .conftest import run_example

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "interrupt_driver.py"

# the tiny preset made smaller still (the same as tests/interrupt_driver.py uses)
MINI = dict(base_channels=4, depth=2, tile=92, lr=0.003, warmup=3, log_every=4)


def write_pairs(folder, n=4, size=48, seed=1):
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = synthetic_em(n=n, size=size, cell_size=16, seed=seed)
    for k in range(n):
        tifffile.imwrite(folder / f"{k:03d}_image.tif", images[k])
        tifffile.imwrite(folder / f"{k:03d}_label.tif", labels[k])
    return folder


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs")


@pytest.fixture
def mini(monkeypatch):
    monkeypatch.setitem(config.PRESETS, "tiny", MINI)


def cli(argv, capsys):
    """run_cli(main, argv) in this process: (exit status, stdout, stderr)."""
    return run_example(script.main, argv, capsys)


def only_run(out):
    runs = sorted(p for p in Path(out).iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


# ---- defect 1: a run remembers its data ------------------------------------------------------
def test_resume_trains_on_the_runs_data_and_refuses_other_data(pairs, tmp_path, mini, capsys):
    args = ["--preset", "tiny", "--val-every", "2", "--out", str(tmp_path / "runs")]
    code, out, _ = cli(["--data", str(pairs), "--steps", "2", "--train-slices", "0,1",
                        "--val-slices", "3"] + args, capsys)
    assert code == 0
    run = only_run(tmp_path / "runs")
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["source"] == str(pairs.resolve())
    assert (data["train_slices"], data["val_slices"], data["seed"]) == ("0-1", "3", None)

    # the README's resume line has no --data: the run's own data and slices are used
    code, out, _ = cli(["--resume", str(run), "--steps", "4"], capsys)
    assert code == 0
    assert f"data: image/label pairs ({pairs.resolve()}): 2 training and 1 validation" in out
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["data"] == str(pairs.resolve()) and final["step"] in (2, 4)
    assert [r["step"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if "val" in r] == [0, 2, 4]

    other = write_pairs(tmp_path / "other", seed=2)
    for extra, message in [
            (["--data", str(other)], rf"--data {other} is not this run's data "
                                     rf"\({pairs.resolve()}\): leave out --data"),
            (["--data", "synthetic"], rf"--data synthetic is not this run's data \({pairs}"),
            (["--train-slices", "0-2"], r"--train-slices 0-2 is not this run's \(0-1\)"),
            (["--val-slices", "2"], r"--val-slices 2 is not this run's \(3\)"),
            # the recipe is fixed once a run has started (only steps and validations change)
            (["--tile", "108"], r"--tile: this run has tile = 92, fixed once a run has started"),
            (["--no-elastic"], r"--no-elastic: this run has elastic = True, fixed"),
            (["--lr", "0.01"], r"--lr: this run has lr = 0.003, fixed"),
            (["--augment", "wide"], r"--augment: this run has augment = 'paper', fixed")]:
        with pytest.raises(UserError, match=message):
            script.main(["--resume", str(run), "--steps", "6"] + extra)
    # a run of a version before --augment augmented the paper's way: not wide from here on
    written = (run / "config.json").read_text()
    older = {k: v for k, v in json.loads(written).items() if k != "augment"}
    (run / "config.json").write_text(json.dumps(older))
    try:
        with pytest.raises(UserError, match=r"--augment: this run has augment = 'paper', fixed"):
            script.main(["--resume", str(run), "--steps", "6", "--augment", "wide"])
    finally:
        (run / "config.json").write_text(written)
    # the same folder named otherwise is the same data
    assert cli(["--resume", str(run), "--steps", "4", "--data", str(pairs) + "/."], capsys)[0] == 0

    # files changed under the run's feet: not silently another data set
    tifffile.imwrite(pairs / "003_image.tif", synthetic_em(n=1, size=48, seed=9)[0][0])
    try:
        with pytest.raises(UserError, match="have changed since the run .* was made"):
            script.main(["--resume", str(run), "--steps", "6"])
    finally:
        write_pairs(pairs)


def test_a_trainer_refuses_to_resume_on_other_data(tmp_path):
    images, labels = synthetic_em(n=3, size=48, cell_size=16, seed=1)
    other, _ = synthetic_em(n=3, size=48, cell_size=16, seed=2)
    cfg = config.TrainConfig(base_channels=2, depth=2, tile=92, steps=1, val_every=1)
    train.Trainer(cfg, (images[:2], labels[:2]), (images[2:], labels[2:]), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="was trained on other data"):
        train.Trainer(cfg, (other[:2], labels[:2]), (images[2:], labels[2:]), tmp_path,
                      resume=True, progress=False)


# ---- defect 2: a real Ctrl-C anywhere, then --resume: the numbers of an uninterrupted run ------
STEPS = ["--preset", "tiny", "--steps", "9", "--val-every", "3", "--train-slices", "0-2",
         "--val-slices", "3"]


def child(*args, out):
    """Run tests/interrupt_driver.py (train_isbi.py with SIGINT at a chosen point)."""
    env = {k: v for k, v in os.environ.items() if k != "TINYUNET_DEVICE"}
    return subprocess.run([sys.executable, str(DRIVER), *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def outcome(run):
    log = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
           for line in (run / "log.jsonl").read_text().splitlines()]
    best_meta, best, _ = load_checkpoint(run / "best.npz")
    _, latest, buffers = load_checkpoint(run / "latest.npz")
    return dict(log=log, final=json.loads((run / "final_metrics.json").read_text()),
                best_step=best_meta["step"], best=best, latest=latest, buffers=buffers["velocity"])


@pytest.fixture(scope="module")
def uninterrupted(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    p = child("none", "0", "--data", str(pairs), *STEPS, out=out)
    assert p.returncode == 0, p.stderr
    return outcome(only_run(out))


def _optimizer_call():
    """The _grad call halfway through the parameters of step 5 (one call per parameter)."""
    n = len(UNet(base_channels=MINI["base_channels"], depth=MINI["depth"]).params)
    return 4 * n + n // 2


# POINT, the call that signals, the message of the stop. Validations at steps 0, 3, 6, 9 (the
# one at 6 is the best); np.savez calls: latest at 0 (new run), latest after step 0's
# validation, best and latest at 3, best at 6 (the 5th).
INTERRUPTIONS = [
    ("sample", 5, "stopped at step 4; checkpoint saved", 130),   # tile 5 is drawn in step 4
    ("optimizer", _optimizer_call(), "stopped at step 5; checkpoint saved", 130),
    ("validate", 3, r"stopped at step 6 \(its validation is done on resume\); checkpoint saved",
     130),
    ("checkpoint", 5, "stopped at step 6; checkpoint saved", 130),
    ("twice", 8, r"stopped at once at step 7; the last checkpoint, of step 6, is in", 130),
    # what a scheduler or `timeout` sends before it kills a job, and a closed terminal
    ("sigterm", 5, "stopped at step 5; checkpoint saved", 128 + 15),
    ("sighup", 5, "stopped at step 5; checkpoint saved", 128 + 1),
]


@pytest.mark.parametrize("point, call, message, status", INTERRUPTIONS,
                         ids=[p[0] for p in INTERRUPTIONS])
def test_ctrl_c_anywhere_then_resume_ends_as_an_uninterrupted_run(
        point, call, message, status, pairs, uninterrupted, tmp_path):
    p = child(point, str(call), "--data", str(pairs), *STEPS, out=tmp_path)
    assert p.returncode == status, p.stderr
    assert re.search(rf"interrupted: {message}", p.stderr), p.stderr
    run = only_run(tmp_path)
    assert not (run / "final_metrics.json").exists()
    assert f"--resume {run}" in p.stderr
    p = child("none", "0", "--resume", str(run), out=tmp_path)
    assert p.returncode == 0, p.stderr
    got = outcome(run)
    assert got["log"] == uninterrupted["log"]           # every loss and validation, once
    assert got["final"] == uninterrupted["final"]
    assert got["best_step"] == uninterrupted["best_step"]
    for name in ("best", "latest", "buffers"):
        assert got[name].keys() == uninterrupted[name].keys()
        for k, v in uninterrupted[name].items():
            np.testing.assert_array_equal(got[name][k], v, err_msg=f"{name} {k}")


# ---- defect 3 and 4: one line, exit status 2, nothing written before the arguments are checked -
def bad_inputs(tmp, pairs):
    """(arguments, the error line's pattern) for the mistakes a user makes."""
    (tmp / "a_file").write_text("x")
    notimage = write_pairs(tmp / "notimage")
    (notimage / "002_image.tif").write_bytes(b"this is not a TIFF")
    counts = write_pairs(tmp / "counts")
    (counts / "003_label.tif").unlink()
    values = write_pairs(tmp / "values")
    tifffile.imwrite(values / "001_label.tif", np.full((48, 48), 128, np.uint8))
    run = tmp / "runs_bad" / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dict(preset="tiny", **MINI, data=None)))
    (run / "latest.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    p = str(pairs)
    return [
        (["--data", str(tmp / "nowhere")], rf"--data {tmp / 'nowhere'}: no such folder"),
        (["--data", str(tmp / "a_file")], rf"--data {tmp / 'a_file'} is a file; give the folder "
                                          "that holds train-volume.tif and train-labels.tif, or"),
        (["--data", str(tmp)], r"holds neither the ISBI files .* nor \*image\* / \*label\* pairs"),
        (["--data", str(notimage)], r"002_image.tif: cannot read it as an image \(TiffFileError"
                                    r".*\); valid formats are TIFF .*, PNG or JPEG"),
        (["--data", str(counts)], r"counts: 4 image files but 3 label files"),
        (["--data", str(values)], r"001_label.tif: label values must be 0 \(membrane\) and 255 "
                                  r"\(cell interior\) \(or 0 and 1\); found also \[128\]"),
        (["--resume", str(run), "--data", p], r"latest.npz is corrupt or not a tinyunet "
                                              r"checkpoint: it is not an .npz file"),
        (["--resume", str(tmp / "nope")], r"--resume .*nope: no such run directory"),
        (["--device", "gpu"], r"--device gpu: device 'gpu' was requested but CuPy is not "
                              r"installed .*; use --device cpu"),
        (["--steps", "0"], r"argument --steps: must be at least 1, got 0"),
        (["--steps", "-5"], r"argument --steps: must be at least 1, got -5"),
        (["--steps", "many"], r"argument --steps: expected a whole number, got 'many'"),
        (["--lr", "-1"], r"argument --lr: must be a number > 0, got '-1'"),
        (["--lr", "nan"], r"argument --lr: must be a number > 0, got 'nan'"),
        (["--val-every", "0"], r"argument --val-every: must be at least 1, got 0"),
        (["--seed", "-1"], r"argument --seed: must be at least 0, got -1"),
        (["--tile", "101"], r"the run's settings: tile size 101 does not fit a depth-\d U-Net "
                            r".* the nearest valid sizes are"),
        (["--dropout", "1"], r"argument --dropout: must be a number in \[0, 1\), got '1'"),
        (["--momentum", "x"], r"argument --momentum: must be a number in \[0, 1\), got 'x'"),
        (["--w0", "-1"], r"argument --w0: must be a number >= 0, got '-1'"),
        (["--sigma", "0"], r"argument --sigma: must be a number > 0, got '0'"),
        (["--augment", "wider"], r"argument --augment: invalid choice: 'wider' \(choose from "
                                 r"'paper', 'wide'\)"),
        (["--stepz", "3"], r"unrecognized arguments: --stepz 3 \(see --help\)"),
        (["--data", p, "--train-slices", "0-9"], r"--train-slices 0-9: slice 4 does not exist: "
                                                 r"the data has 4 slices \(0-3\)"),
        (["--data", p, "--val-slices", "3-2"], r"--val-slices 3-2: the range 3-2 is empty"),
        (["--data", p, "--val-slices", "last"], r"--val-slices 'last': expected slice numbers "
                                                r"like '0-24' or '25,27,29'"),
        (["--data", p, "--data-seed", "1"], r"--data-seed is the seed of the synthetic set"),
        (["--out", str(tmp / "a_file")], r"--out .*a_file is a file"),
    ]


def test_every_bad_input_is_one_error_line_exit_2_and_writes_nothing(pairs, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.setattr(backend, "_cupy", None)            # --device gpu on a machine without CuPy
    monkeypatch.chdir(tmp_path)
    for argv, pattern in bad_inputs(tmp_path, pairs):
        code, out, err = cli(argv + ["--out", str(tmp_path / "runs")] if "--out" not in argv
                             else argv, capsys)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("error: "), (argv, err)
        assert re.search(pattern, err), (argv, err)
        assert "Traceback" not in err and out == ""
        assert not (tmp_path / "runs").exists(), argv     # checked before anything is written
        with pytest.raises(UserError):                    # --debug: the traceback
            run_cli(script.main, argv + ["--debug"])


def test_the_script_itself_prints_one_line_and_exits_2(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "train_isbi.py"), "--steps", "0",
                        "--out", str(tmp_path / "runs")], capture_output=True, text=True)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == "error: argument --steps: must be at least 1, got 0 (see --help)\n"
    assert not (tmp_path / "runs").exists()


# ---- defects 5 and 6: the default split follows the data; TINYUNET_ISBI_DIR ------------------
def test_default_split_follows_the_data():
    assert default_split(30) == (list(range(25)), list(range(25, 30)))   # ISBI
    assert default_split(12) == (list(range(10)), [10, 11])              # synthetic
    assert default_split(4) == ([0, 1, 2], [3])
    with pytest.raises(UserError, match="only 1 slice.*give --train-slices 0 and --val-slices 0"):
        default_split(1)


def test_isbi_dir_from_the_environment_and_four_slices_by_default(tmp_path, monkeypatch, mini,
                                                                  capsys):
    images, labels = synthetic_em(n=4, size=48, cell_size=16, seed=3)
    isbi = tmp_path / "isbi2012"
    isbi.mkdir()
    tifffile.imwrite(isbi / "train-volume.tif", images, photometric="minisblack")
    tifffile.imwrite(isbi / "train-labels.tif", labels, photometric="minisblack")
    monkeypatch.setenv("TINYUNET_ISBI_DIR", str(isbi))
    code, out, err = cli(["--data", "isbi", "--preset", "tiny", "--steps", "1",
                          "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert (f"data: ISBI 2012 ({isbi}): 3 training and 1 validation slices of 48x48 "
            f"(slices 0-2 and 3)") in out
    assert json.loads((only_run(tmp_path / "runs") / "config.json").read_text())["data"][
        "source"] == str(isbi)
    monkeypatch.setenv("TINYUNET_ISBI_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match=r"--data isbi \(.*elsewhere\): no such folder "
                                        r"\(`--data isbi` is \$TINYUNET_ISBI_DIR"):
        script.main(["--data", "isbi"])


# ---- defect 8: the first run says that kernels compile ---------------------------------------
def test_compiling_is_announced_once_and_only_on_a_cache_miss(tmp_path):
    module = tmp_path / "kernel_mod.py"
    module.write_text("import numba\n\n@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    code = ("import sys; sys.path[:0] = [%r, %r]\n"
            "from tinyunet.commands.cli import announce_compiling\n"
            "announce_compiling()\n"
            "import kernel_mod\n"
            "print(kernel_mod.twice(3), kernel_mod.twice(4.0))\n" % (str(tmp_path), str(ROOT)))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           cwd=tmp_path) for _ in range(2)]
    for p in runs:
        assert p.returncode == 0 and p.stdout == "6 8.0\n", p.stderr
    assert runs[0].stderr.count("compiling the Numba kernels") == 1     # two compilations, one line
    assert "compiling" not in runs[1].stderr                            # loaded from the cache


def test_two_runs_started_in_one_second_get_two_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    made = [rundir.new_run_dir(tmp_path / "runs", "cpu") for _ in range(3)]
    assert [p.name for p in made] == ["20260101-000000-cpu", "20260101-000000-cpu-2",
                                      "20260101-000000-cpu-3"]
    assert all(p.is_dir() for p in made)           # made at once: no other process can take it


def test_the_recipe_flags_reach_the_config(pairs, tmp_path, mini, capsys):
    code, out, _ = cli(["--data", str(pairs), "--preset", "tiny", "--steps", "1", "--tile", "108",
                        "--base-channels", "3", "--depth", "2", "--dropout", "0.5",
                        "--momentum", "0.9", "--lr-schedule", "step", "--warmup", "0",
                        "--w0", "5", "--sigma", "3", "--augment", "wide", "--val-every", "5",
                        "--out", str(tmp_path / "runs")], capsys)
    assert code == 0
    cfg = json.loads((only_run(tmp_path / "runs") / "config.json").read_text())
    assert {k: cfg[k] for k in ("tile", "base_channels", "depth", "dropout", "momentum",
                                "lr_schedule", "warmup", "w0", "sigma", "augment")} == dict(
        tile=108, base_channels=3, depth=2, dropout=0.5, momentum=0.9, lr_schedule="step",
        warmup=0, w0=5.0, sigma=3.0, augment="wide")
