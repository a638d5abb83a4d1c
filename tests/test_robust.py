"""Runs that survive real data and real machines: unexpected images, a full disk, two
processes on one run; and tests that pin down what a round of mutation testing found unpinned
(each was checked by putting the bug in by hand and seeing the test fail)."""
import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from tinyunet.kernels.weight_map import weight_map

from tinyunet import UNet, metrics
from tinyunet.checkpoint import CheckpointError, checkpoint_meta
from tinyunet.commands import predict
from tinyunet.commands import train as train_cmd
from tinyunet.config import TrainConfig
from tinyunet.data import DataError, load_stack, normalise, synthetic_em
from tinyunet.data.samples import TileSampler
from tinyunet.errors import DataWarning, UserError
from tinyunet.metrics import isbi
from tinyunet.optim import SGD, Adam
from tinyunet.train import Trainer

from . import conftest
from .conftest import run_example, write_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "run" / "best.npz", image_dtype="uint8")[0]


def error_line(argv, capsys, main=predict.main):
    return conftest.error_line(main, argv, capsys)


# ---- images: checked for what the model expects ----------------------------------------------
def test_an_image_of_nan_is_an_error_that_counts_them(checkpoint, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((40, 52), np.nan, np.float32))
    err = error_line([checkpoint, tmp_path / "nan.tif", "--out", tmp_path / "o"], capsys)
    assert "nan.tif: 2080 of 2080 pixels are NaN or infinite" in err
    assert not (tmp_path / "o").exists()


def test_a_colour_tiff_is_made_grey_not_read_as_a_stack(checkpoint, tmp_path, capsys):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    planar = np.moveaxis(rgb, -1, 0)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    for name in ("rgb.tif", "planar.tif"):
        stack = None
        with pytest.warns(DataWarning, match="a colour image .RGB.: segmented as grey"):
            stack = load_stack(tmp_path / name)
        np.testing.assert_array_equal(stack[0], rgb.mean(axis=-1).astype(np.uint8))
    code, out, err = run_example(predict.main, [checkpoint, tmp_path / "rgb.tif", "--out",
                                                tmp_path / "o"], capsys)
    assert code == 0 and "warning: " in err and "colour image" in err
    assert tifffile.imread(tmp_path / "o" / "rgb_prob.tif").shape == (1, 40, 52)
    with pytest.raises(DataError, match="a colour image .RGB. where a label image"):
        load_stack(tmp_path / "rgb.tif", labels=True)


def test_an_rgba_png_is_made_grey(tmp_path):
    import imagecodecs
    rgba = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgba))
    with pytest.warns(DataWarning, match="RGBA"):
        stack = load_stack(tmp_path / "a.png")
    assert stack.shape == (1, 20, 30)


def test_16_bit_images_are_scaled_by_their_range_and_a_mismatch_is_said(checkpoint, tmp_path,
                                                                       capsys):
    img8 = np.random.default_rng(0).integers(0, 256, (40, 52)).astype(np.uint8)
    img16 = img8.astype(np.uint16) * 257                # the same brightness in 16 bits
    np.testing.assert_allclose(normalise(img16, 0.5, 0.2), normalise(img8, 0.5, 0.2), atol=1e-6)
    tifffile.imwrite(tmp_path / "a8.tif", img8)
    tifffile.imwrite(tmp_path / "a16.tif", img16)
    code, _, err = run_example(predict.main, [checkpoint, tmp_path / "a8.tif", "--out",
                                              tmp_path / "o"], capsys)
    assert code == 0 and "warning" not in err
    code, _, err = run_example(predict.main, [checkpoint, tmp_path / "a16.tif", "--out",
                                              tmp_path / "o"], capsys)
    assert code == 0 and "holds uint16 grey values, the model was trained on uint8" in err
    p8, p16 = (tifffile.imread(tmp_path / "o" / f"{n}_prob.tif") for n in ("a8", "a16"))
    np.testing.assert_allclose(p16, p8, atol=1e-5)      # not saturated: the same prediction


def test_a_constant_image_says_so(checkpoint, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "flat.tif", np.full((40, 52), 7, np.uint8))
    code, _, err = run_example(predict.main, [checkpoint, tmp_path / "flat.tif", "--out",
                                              tmp_path / "o"], capsys)
    assert code == 0 and "every pixel is 7: an empty or constant image" in err


def test_the_checkpoint_records_what_the_model_was_trained_on(tmp_path):
    images, labels = synthetic_em(n=3, size=48, cell_size=16, seed=1)
    cfg = TrainConfig(base_channels=2, depth=2, tile=92, steps=1, val_every=1)
    Trainer(cfg, (images[:2], labels[:2]), (images[2:], labels[2:]), tmp_path / "r",
            progress=False).run()
    meta = checkpoint_meta(tmp_path / "r" / "latest.npz")
    assert meta["image_dtype"] == "uint8"


@pytest.mark.parametrize("dtype, scale", [(np.uint16, 257), (np.float32, 1 / 255)],
                         ids=["uint16", "float32"])
def test_a_run_normalises_16_bit_and_float_images_by_the_types_range(tmp_path, dtype, scale):
    """A run's mean and std are those of x / range (65535 for 16-bit, 1 for float images) and
    it trains and validates on (x / range - mean) / std: the 8-bit run's numbers, rescaled."""
    images, labels = synthetic_em(n=3, size=48, cell_size=16, seed=1)
    grey = (images * np.float64(scale)).astype(dtype)   # 8-bit v -> 257 v or v / 255
    rng = {np.uint16: 65535, np.float32: 1}[dtype]
    x = grey.astype(np.float64) / rng                   # == images / 255, to float32 rounding
    t = conftest.small_trainer(tmp_path / "r", data=((grey[:2], labels[:2]),
                                                      (grey[2:], labels[2:])))
    t.lock.close()
    assert t.mean == pytest.approx(x[:2].mean(), abs=1e-9)
    assert t.std == pytest.approx(x[:2].std(), abs=1e-9)
    assert t.mean == pytest.approx((images[:2] / 255).mean(), abs=1e-6)
    np.testing.assert_allclose(t.val_x, (x[2:] - t.mean) / t.std, atol=1e-5)
    np.testing.assert_allclose(t.sampler.images, (x[:2] - t.mean) / t.std, atol=1e-5)


# ---- signals and faults ----------------------------------------------------------------------
def small_trainer(run_dir, steps=4, **kw):
    return conftest.small_trainer(run_dir, steps=steps, val_every=2, warmup=1, lr=0.004, **kw)


def test_two_trainers_on_one_run_cannot_both_train(tmp_path, capsys, monkeypatch):
    first = small_trainer(tmp_path / "run")
    with pytest.raises(UserError, match=r"the run in .*run is being trained by process "
                                        rf"{os.getpid()} \(since .*\): two processes would"):
        small_trainer(tmp_path / "run")
    first.run()                                       # its run ends: the lock goes with it
    small_trainer(tmp_path / "run")
    # a second process, from the command line: one error line
    holder = small_trainer(tmp_path / "held")
    (tmp_path / "held" / "config.json").write_text(json.dumps(
        dict(preset="tiny", base_channels=2, depth=2, tile=92, steps=4, data=None)))
    p = subprocess.run([os.sys.executable, "-m", "tinyunet", "train", "--resume",
                        str(tmp_path / "held"), "--steps", "4"], capture_output=True, text=True)
    assert p.returncode == 2 and "is being trained by process" in p.stderr, p.stderr
    holder.lock.close()


def test_a_run_gives_the_signal_handlers_back(tmp_path):
    """After a run, finished, stopped or failed, SIGINT, SIGTERM and SIGHUP have the handlers
    they had before it: a later Ctrl-C reaches them."""
    from tinyunet.rundir import STOP_SIGNALS, Stopped
    caught = []

    def sentinel(signum, frame):
        caught.append(signum)

    def fail(trainer):
        raise RuntimeError("the callback failed")

    def interrupt(trainer):
        raise KeyboardInterrupt

    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        for s in STOP_SIGNALS:
            signal.signal(s, sentinel)
        for name, callback, error in [("done", None, None), ("failed", fail, RuntimeError),
                                      ("stopped", interrupt, Stopped)]:
            t = conftest.small_trainer(tmp_path / name, steps=1, val_every=1, warmup=1)
            t.callback = callback
            with pytest.raises(error) if error else contextlib.nullcontext():
                t.run()
            assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == dict.fromkeys(
                STOP_SIGNALS, sentinel), name
        os.kill(os.getpid(), signal.SIGINT)             # Ctrl-C, after the runs
        assert caught == [signal.SIGINT]
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_the_lock_file_names_only_the_process_that_holds_it(tmp_path):
    """.lock holds "process PID (since TIME)" of its holder and nothing else: a stale lock of
    a dead process is replaced, not appended to, and a refused second Trainer leaves it as it
    is."""
    from tinyunet.rundir import RunLock
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([os.sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = f"process {dead} (since 2000-01-01 00:00:00) and a longer line than the new one\n"
    (run / ".lock").write_text(stale)
    holder = rf"process {os.getpid()} \(since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\)"
    lock = RunLock(run)
    content = (run / ".lock").read_text()
    assert re.fullmatch(holder, content), content
    with pytest.raises(UserError, match=rf"being trained by {holder}: two processes"):
        RunLock(run)
    assert (run / ".lock").read_text() == content
    lock.close()
    again = RunLock(run)                                # the next holder: its own line only
    assert re.fullmatch(holder, (run / ".lock").read_text())
    again.close()


def test_progress_lines_in_a_log_file_come_once_per_interval(tmp_path, capsys, monkeypatch):
    """Plain progress lines come when line_seconds have passed since the last line (and at the
    last step), not at every step once the first interval has passed: with a clock that
    advances 1 s a step and line_seconds 3, a 9-step run writes the lines of steps 4, 7, 9."""
    from tinyunet import train
    clock = [0.0]
    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(Trainer, "line_seconds", 3.0)

    def tick(trainer):
        clock[0] += 1.0                                 # step s is logged at time s - 1

    t = conftest.small_trainer(tmp_path / "run", steps=9, val_every=100, warmup=1)
    t.progress, t.callback = True, tick                 # stderr is captured: not a terminal
    t.run()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 4/9", "step 7/9", "step 9/9"]


@pytest.mark.parametrize("name, step", [("config.json", 0), ("curves.png", 2),
                                        ("final_metrics.json", 4)])
def test_a_failed_write_of_a_runs_file_says_resume_continues_and_it_does(tmp_path, monkeypatch,
                                                                         name, step):
    """A failed write of config.json, curves.png or final_metrics.json says that the last
    checkpoint, of its step, is intact and that --resume continues; the checkpoint loads and
    the run resumed from it (its settings read as --resume reads them) ends and writes the
    file."""
    from tinyunet import files
    from tinyunet.checkpoint import model_from_checkpoint
    from tinyunet.rundir import read_run
    from tinyunet.train import final_report
    write, writes = files.atomic_write, []

    def full_disk(path, writer):                        # the write of `name` at `step` fails
        writes.append(Path(path).name)
        if Path(path).name == name and writes.count(name) == (2 if name == "curves.png" else 1):
            raise OSError(28, "No space left on device")
        return write(path, writer)
    monkeypatch.setattr(files, "atomic_write", full_disk)
    run, data = tmp_path / "run", conftest.small_data()
    with pytest.raises(UserError, match=rf"could not write .*{re.escape(name)} \(No space left "
                                        rf"on device\): the previous latest\.npz of step {step} "
                                        rf"is intact \(free some space, then --resume\)"):
        t = small_trainer(run)                          # validations at steps 0, 2, 4
        t.run()
        final_report(t, "cpu")
    assert checkpoint_meta(run / "latest.npz")["step"] == step
    model_from_checkpoint(run / "latest.npz")
    cfg = TrainConfig.resumed(read_run(run), {})        # what --resume RUN reads
    resumed = Trainer(cfg, *data, run, resume=True, progress=False)
    assert resumed.step == step
    resumed.run()
    final_report(resumed, "cpu")
    assert resumed.step == 4 and (run / name).exists()


def _tmpfs(folder, size):
    """Mount a tmpfs of `size` at folder; False where this machine does not allow it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A folder on a disk that fills up: a real 1 MiB tmpfs where the test may mount one, else
    a folder whose writes start failing with ENOSPC once `fill()` is called."""
    disk = tmp_path / "disk"
    real = _tmpfs(disk, "1m")
    state = {"full": False}
    if not real:
        import builtins
        open_ = builtins.open

        def full_open(file, mode="r", *args, **kwargs):
            if state["full"] and Path(str(file)).resolve().is_relative_to(disk.resolve()) and \
                    any(m in mode for m in "wa"):
                raise OSError(28, "No space left on device")
            return open_(file, mode, *args, **kwargs)
        monkeypatch.setattr(builtins, "open", full_open)

    def fill():
        state["full"] = True
        if real:
            with open(disk / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
    yield disk, fill
    if real:
        subprocess.run(["umount", str(disk)])


def test_a_full_disk_is_one_line_and_the_last_checkpoint_is_intact(small_disk, capsys):
    disk, fill = small_disk
    t = small_trainer(disk / "run", steps=4)
    t.cfg.val_every = 100                           # validations at 0 and 4 only
    t.cfg.log_every = 100
    before = (disk / "run" / "latest.npz").read_bytes()
    fill()
    with pytest.raises(CheckpointError, match=r"could not write .*(latest\.npz|best\.npz|log\.jsonl)"
                                              r" \(No space left on device\): the previous "
                                              r"latest\.npz of step 0 is intact"):
        t.run()
    assert (disk / "run" / "latest.npz").read_bytes() == before      # intact
    assert checkpoint_meta(disk / "run" / "latest.npz")["step"] == 0
    leftovers = [p.name for p in (disk / "run").iterdir() if ".tmp" in p.name]
    assert leftovers == []


def test_a_full_disk_while_writing_predictions_is_one_line(small_disk, checkpoint, tmp_path,
                                                           capsys):
    disk, fill = small_disk
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).integers(0, 256, (40, 52),
                                                                           dtype=np.uint8))
    fill()
    err = error_line([checkpoint, tmp_path / "a.tif", "--out", disk / "pred"], capsys)
    assert "could not write" in err and "a_prob.tif (No space left on device)" in err
    assert not (disk / "pred" / "a_prob.tif").exists()


# ---- what the tests missed (mutation testing) ------------------------------------------------
def test_a_samples_labels_and_weights_are_exactly_the_centre_of_its_input_tile():
    """Images, classes and weights encode their own coordinates: undeformed and unflipped, the
    label and weight tiles must be the input tile's centre, pixel for pixel."""
    h = w = 64
    coords = (np.arange(h)[:, None] * 1000 + np.arange(w)[None]).astype(np.float32)
    classes = (coords.astype(np.int64) % 2).astype(np.uint8)
    s = TileSampler(coords[None], classes[None], coords[None], tile=92, out=52, elastic=False,
                    flips=False, grey=False)
    for seed in range(5):
        x, y, wt = s.sample(np.random.default_rng(seed))
        centre = x[0, 0, 20:72, 20:72]
        np.testing.assert_array_equal(wt[0], centre)
        np.testing.assert_array_equal(y[0], centre.astype(np.int64) % 2)
        # and the output tile is where the sampler drew it: its first pixel is image pixel
        # (oy, ox), the input tile starting 20 px (the margin) before it, in mirrored context
        rng = np.random.default_rng(seed)
        rng.integers(1)                                   # the image
        oy, ox = (int(rng.integers(0, h - 52 + 1)) for _ in range(2))
        assert wt[0, 0, 0] == coords[oy, ox] and wt[0, -1, -1] == coords[oy + 51, ox + 51]


def test_the_rand_threshold_of_a_stack_comes_from_its_summed_pair_counts():
    """As Fiji does: the pair counts (sum n_ij^2, sum s_i^2, sum t_j^2) of all slices are summed
    per threshold and the best summed F-score chosen, not the best mean of slice scores."""
    rng = np.random.default_rng(0)
    truths = np.ones((2, 24, 24), bool)
    truths[:, :, 11] = False
    truths[1, 11, :] = False
    probs = np.clip(truths * 0.6 + rng.normal(0, 0.25, truths.shape), 0, 1)
    probs[1] *= 0.6                                    # the slices prefer other thresholds
    sums = {t: [isbi._rand_sums(isbi.ndi.label(g, structure=isbi._FOUR)[0],
                                   isbi.ndi.label(p > t, structure=isbi._FOUR)[0])
                for p, g in zip(probs, truths)] for t in isbi.THRESHOLDS}
    pooled = max(isbi.THRESHOLDS, key=lambda t: isbi._rand_f(np.sum(sums[t], axis=0)))
    mean = max(isbi.THRESHOLDS, key=lambda t: np.mean([isbi._rand_f(s) for s in sums[t]]))
    assert pooled != mean                              # the data tell the two rules apart
    res = metrics.evaluate(probs, truths, topology=False)
    assert res["thresholds"]["rand_error"] == pooled
    assert res["rand_error"] == pytest.approx(1 - isbi._rand_f(np.sum(sums[pooled], axis=0)),
                                              abs=1e-12)


def test_v_info_counts_singletons_as_fiji_does():
    """Each predicted-background pixel inside the truth is a segment of its own: V_info from a
    segmentation where every such pixel has its own id, computed from the entropies by hand."""
    rng = np.random.default_rng(3)
    gt = rng.integers(1, 4, (12, 12))
    gt[:, 6] = 0
    pr = rng.integers(0, 3, (12, 12))                  # 0: singletons
    inside = gt > 0
    relabelled = pr.copy()
    singles = inside & (pr == 0)
    relabelled[singles] = 100 + np.arange(singles.sum())
    a, b = gt[inside], relabelled[inside]
    n = a.size

    def entropy(*labels):
        _, counts = np.unique(np.stack(labels), axis=1, return_counts=True)
        p = counts / n
        return -(p * np.log(p)).sum()

    ha, hb, hab = entropy(a), entropy(b), entropy(a, b)
    assert metrics.info_fscore(gt, pr) == pytest.approx(2 * (ha + hb - hab) / (ha + hb),
                                                        abs=1e-12)


def test_resume_with_changed_labels_is_refused(tmp_path, capsys, monkeypatch):
    from tinyunet import config
    monkeypatch.setitem(config.PRESETS, "tiny", dict(base_channels=2, depth=2, tile=92,
                                                    warmup=1, log_every=2))
    folder = tmp_path / "pairs"
    folder.mkdir()
    images, labels = synthetic_em(n=4, size=48, cell_size=16, seed=1)
    for k in range(4):
        tifffile.imwrite(folder / f"{k}_image.tif", images[k])
        tifffile.imwrite(folder / f"{k}_label.tif", labels[k])
    code, _, err = run_example(train_cmd.main, ["--data", folder, "--preset", "tiny", "--steps",
                                                "2", "--out", tmp_path / "runs"], capsys)
    assert code == 0, err
    run = next((tmp_path / "runs").iterdir())
    changed = labels[1].copy()
    changed[:5] = 0
    tifffile.imwrite(folder / "1_label.tif", changed)    # the images stay as they were
    err = error_line(["--resume", run, "--steps", "4"], capsys, train_cmd.main)
    assert "have changed since the run" in err


def test_more_than_255_cells_stay_distinct_in_the_weight_map():
    inst = np.zeros((8, 12), np.int32)
    inst[2:6, 1:5], inst[2:6, 7:11] = 1, 257           # 257 would be 1 again in uint8
    w = weight_map(inst, w0=10, sigma=5)
    assert w[4, 6] > 5                                 # the border term between two cells
    merged = np.where(inst > 0, 1, 0)
    assert weight_map(merged, w0=10, sigma=5)[4, 6] < 2


@pytest.mark.parametrize("opt_cls", [SGD, Adam])
def test_weight_decay_pulls_weights_towards_zero(opt_cls):
    """With zero gradients, one step of SGD (momentum 0) moves p to p - lr wd p; one step of
    Adam (L2 added to the gradient, bias-corrected) to p - lr sign(p)."""
    model = UNet(base_channels=1, depth=1, dtype="float64")
    p0 = {k: v.copy() for k, v in model.params.items()}
    for g in model.grads().values():
        g[...] = 0.0
    kw = dict(momentum=0.0) if opt_cls is SGD else dict(eps=1e-12)
    opt_cls(model, lr=0.1, weight_decay=0.5, **kw).step()
    for k, v in model.params.items():
        want = p0[k] - 0.1 * 0.5 * p0[k] if opt_cls is SGD else p0[k] - 0.1 * np.sign(p0[k])
        np.testing.assert_allclose(v, want, rtol=0, atol=1e-9, err_msg=k)
        moved = p0[k] != 0
        assert (np.sign(v - p0[k])[moved] == -np.sign(p0[k])[moved]).all()   # towards zero


def test_a_resumed_run_keeps_the_settings_it_was_resumed_with(tmp_path, capsys, monkeypatch):
    """--steps (and --val-every, --device) given to a resume are the run's settings from then
    on: config.json says so, and the next resume without them does not go back."""
    from tinyunet import config
    monkeypatch.setitem(config.PRESETS, "tiny", dict(base_channels=2, depth=2, tile=92,
                                                    warmup=1, log_every=2))
    code, _, err = run_example(train_cmd.main, ["--preset", "tiny", "--steps", "2", "--out",
                                                tmp_path / "runs"], capsys)
    assert code == 0, err
    run = next((tmp_path / "runs").iterdir())
    assert run_example(train_cmd.main, ["--resume", run, "--steps", "4"], capsys)[0] == 0
    assert json.loads((run / "config.json").read_text())["steps"] == 4
    code, _, err = run_example(train_cmd.main, ["--resume", run], capsys)
    assert code == 0 and "already at step" not in err


def test_a_failed_start_leaves_no_lock_behind(tmp_path):
    t = small_trainer(tmp_path / "run")
    t.run()
    (tmp_path / "run" / "latest.npz").write_bytes(b"not a checkpoint")
    for _ in range(2):                       # the second attempt is not told "being trained"
        with pytest.raises(CheckpointError, match="is corrupt or not a tinyunet checkpoint"):
            Trainer(t.cfg, (t.sampler.images, t.val_labels), (t.val_images, t.val_labels),
                    tmp_path / "run", resume=True, progress=False)


def test_validation_frames_without_cells_give_no_best_and_a_report_all_the_same(tmp_path):
    from tinyunet.train import final_report
    inst = np.zeros((3, 64, 64), np.int32)
    inst[:2, 10:30, 10:30], inst[:2, 10:30, 31:50] = 1, 2
    images = (60 + 100 * (inst > 0)).astype(np.uint8)
    cfg = TrainConfig(base_channels=2, depth=2, tile=92, steps=2, val_every=1, warmup=1,
                      labels="instances", border=1)
    t = Trainer(cfg, (images[:2], inst[:2]), (images[2:], inst[2:]), tmp_path / "r",
                progress=False)
    t.run()
    assert not (tmp_path / "r" / "best.npz").exists()    # SEG of no cell: nan, never the best
    final = final_report(t, "cpu")
    assert final["step"] == 2 and np.isnan(final["plain"]["seg"])


def test_the_console_command_exits_0_after_a_successful_run(tmp_path):
    labels = np.full((2, 24, 28), 255, np.uint8)
    labels[:, :, 9] = 0
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    tifffile.imwrite(tmp_path / "probs.tif", (labels / 255).astype(np.float32),
                     photometric="minisblack")
    p = subprocess.run([os.sys.executable, "-m", "tinyunet", "evaluate", str(tmp_path / "probs.tif"),
                        str(tmp_path / "labels.tif"), "--json"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert json.loads(p.stdout)["pixel_error"] == 0
