"""Training pipeline: samples, checkpoints (atomic, round trip, errors), exact resume, Ctrl-C."""
import io
import json

import numpy as np
import pytest

from tinyunet.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from tinyunet.config import TrainConfig, learning_rate
from tinyunet.data import normalise, synthetic_em
from tinyunet.data.samples import TileSampler
from tinyunet.data.targets import targets
from tinyunet.files import atomic_write
from tinyunet.train import Trainer

from .conftest import small_config


@pytest.fixture(scope="module")
def data():
    images, labels = synthetic_em(n=4, size=64, cell_size=16, seed=1)
    return (images[:3], labels[:3]), (images[3:], labels[3:])


small_cfg = small_config


def params(model):
    return {k: v.copy() for k, v in model.params.items()}


def test_sample_labels_are_the_centre_of_the_input_tile(data):
    (images, labels), _ = data
    classes, w = targets(labels, "membranes", "paper")
    s = TileSampler(normalise(images, 0.5, 0.25), classes, w, tile=92, out=52,
                    elastic=False, flips=False, grey=False)
    x, y, wt = s.sample(np.random.default_rng(0))
    assert x.shape == (1, 1, 92, 92) and y.shape == wt.shape == (1, 52, 52)
    # undeformed: the input tile's centre is the image at the labels' position, so the
    # membrane pixels (dark) of the input centre are exactly label 0
    centre = x[0, 0, 20:72, 20:72]
    assert centre[y[0] == 0].mean() < centre[y[0] == 1].mean() - 1.0
    assert wt[0][y[0] == 0].mean() > wt[0][y[0] == 1].mean()     # border term on membranes


def test_deformed_samples_keep_label_values(data):
    (images, labels), _ = data
    s = TileSampler(normalise(images, 0.5, 0.25), *targets(labels, "membranes", "none"),
                    tile=92, out=52)
    rng = np.random.default_rng(1)
    for _ in range(3):
        _, y, wt = s.sample(rng)
        assert set(np.unique(y)) <= {0, 1}
        np.testing.assert_allclose(wt, 1.0)


@pytest.mark.parametrize("augment", ["paper", "wide"])
def test_the_recipe_augment_is_the_trainers_sampler(augment, tmp_path):
    """cfg.augment reaches the tiles a Trainer draws: its sampler's samples are, bit for bit,
    those of a TileSampler of that augment on the same normalised images."""
    from .conftest import small_data, small_trainer
    (images, labels), _ = small_data()
    t = small_trainer(tmp_path / "run", augment=augment)
    classes, weights = targets(labels, "membranes", "paper")
    own = TileSampler(normalise(images, t.mean, t.std), classes, weights, 92, t.out,
                      augment=augment)
    for a, b in zip(t.sampler.sample(np.random.default_rng(3)),
                    own.sample(np.random.default_rng(3))):
        np.testing.assert_array_equal(a, b)
    t.lock.close()


def test_learning_rate_schedule():
    cfg = small_cfg(steps=100, lr=1.0, warmup=10, lr_schedule="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 99) == pytest.approx(0.01, rel=0.05)
    assert learning_rate(small_cfg(steps=90, warmup=0, lr=1.0, lr_schedule="step"), 61) == 0.1


def test_checkpoint_round_trip_and_errors(data, tmp_path):
    t = Trainer(small_cfg(), *data, tmp_path / "run", progress=False)
    t.run()
    model, meta = model_from_checkpoint(tmp_path / "run" / "latest.npz")
    for k, v in t.model.params.items():
        np.testing.assert_array_equal(model.params[k], v)
    assert meta["step"] == 6 and meta["model"]["base_channels"] == 2
    _, _, bufs = load_checkpoint(tmp_path / "run" / "latest.npz")
    np.testing.assert_array_equal(bufs["velocity"]["out.bias"], t.opt.velocity["out.bias"])
    assert (tmp_path / "run" / "best.npz").exists()
    for name in ("curves.png", "predictions.png", "config.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0

    bad = tmp_path / "corrupt.npz"
    bad.write_bytes((tmp_path / "run" / "latest.npz").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt or not a tinyunet checkpoint"):
        load_checkpoint(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a tinyunet checkpoint: it has no 'meta' entry "
                                              r"\(its arrays: x\)"):
        load_checkpoint(tmp_path / "other.npz")
    # NumPy's own messages for these advise allow_pickle=True, which would run the file's code
    np.savez(tmp_path / "objects.npz", meta=np.array([{"step": 1}], dtype=object))
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(2000))
    for name, why in [("objects.npz", "it holds Python objects"),
                      ("random.npz", r"it is not an .npz file \(a zip archive of arrays\)")]:
        with pytest.raises(CheckpointError, match=why) as e:
            load_checkpoint(tmp_path / name)
        assert "pickle" not in str(e.value)
    with pytest.raises(CheckpointError, match="different model"):
        Trainer(small_cfg(base_channels=4), *data, tmp_path / "run", resume=True, progress=False)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "latest.npz"
    path.write_bytes(b"good checkpoint")

    def crash(f):
        f.write(b"half a checkpo")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, crash)
    assert path.read_bytes() == b"good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.npz"]      # no temporary left


def test_interrupt_and_resume_ends_where_an_uninterrupted_run_ends(data, tmp_path):
    full = Trainer(small_cfg(dropout=0.3), *data, tmp_path / "full", progress=False)
    full.run()

    def stop_at_4(trainer):                  # Ctrl-C after step 4
        if trainer.step == 4:
            raise KeyboardInterrupt

    part = Trainer(small_cfg(dropout=0.3), *data, tmp_path / "part", progress=False,
                   callback=stop_at_4)
    with pytest.raises(KeyboardInterrupt, match="stopped at step 4; checkpoint saved"):
        part.run()
    assert load_checkpoint(tmp_path / "part" / "latest.npz")[0]["step"] == 4
    resumed = Trainer(small_cfg(dropout=0.3), *data, tmp_path / "part", resume=True,
                      progress=False)
    assert resumed.step == 4
    resumed.run()
    a, b = params(full.model), params(resumed.model)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])      # identical numbers on the CPU
    log_full = [json.loads(l) for l in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_part = [json.loads(l) for l in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert strip(log_full) == strip(log_part)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="tile size 96 .* 92 or 100"):
        TrainConfig.from_preset("tiny", tile=96, depth=3).check()
    with pytest.raises(ValueError, match="valid presets"):
        TrainConfig.from_preset("huge")


def test_figures_show_the_best_checkpoint(data, tmp_path, monkeypatch):
    """predictions.png is drawn from the validation that made best.npz (not the last one), and
    curves.png marks that step."""
    import tinyunet.plots
    calls = []
    monkeypatch.setattr(tinyunet.plots, "plot_predictions",
                        lambda image, label, prob, w, path, title: calls.append(("pred", prob, title)))
    monkeypatch.setattr(tinyunet.plots, "plot_curves",
                        lambda log, path, best_step: calls.append(("curves", best_step)))
    t = Trainer(small_cfg(steps=12, val_every=2), *data, tmp_path / "run", progress=False)
    probs_at = {}
    validate = t.validate

    def spy(tta=None):
        out = validate(tta)
        probs_at[t.step] = (t.val_probs[0].copy(), out["rand_error"])
        return out
    t.validate = spy
    t.run()
    # the step-0 validation ("before training") is logged but never becomes best.npz
    errors = [r["val"]["rand_error"] for r in t.read_log() if "val" in r and r["step"] > 0]
    steps = [r["step"] for r in t.read_log() if "val" in r and r["step"] > 0]
    best_step = steps[int(np.argmin(errors))]
    assert load_checkpoint(tmp_path / "run" / "best.npz")[0]["step"] == best_step
    pred = [c for c in calls if c[0] == "pred"]
    assert f"step {best_step}," in pred[-1][2]
    np.testing.assert_array_equal(pred[-1][1], probs_at[best_step][0])
    # drawn once per new best, never for a validation that was not one
    new_best = [s for i, s in enumerate(steps) if errors[i] < min(errors[:i], default=np.inf)]
    assert [int(c[2].split("step ")[1].split(",")[0]) for c in pred] == new_best
    assert calls[-1] == ("curves", best_step)


def test_ema_update_rule_and_state(data):
    """a <- d a + (1 - d) p with d = min(decay, (1 + t) / (10 + t)); the average is applied for
    a block and the model's own parameters come back after it."""
    from tinyunet import UNet
    from tinyunet.optim import EMA
    model = UNet(base_channels=1, depth=1, dtype="float64")
    p0 = model.params["out.bias"].copy()
    ema = EMA(model, decay=0.5)
    want = p0.copy()
    for t, shift in enumerate([1.0, 2.0, 4.0]):
        for v in model.params.values():
            v += shift
        ema.update()
        d = min(0.5, (1 + t) / (10 + t))                  # 0.1, 0.18..., 0.25
        want = d * want + (1 - d) * model.params["out.bias"]
    np.testing.assert_allclose(ema.average["out.bias"], want, rtol=1e-14)
    own = model.params["out.bias"].copy()
    with ema.applied():
        np.testing.assert_array_equal(model.params["out.bias"], ema.average["out.bias"])
    np.testing.assert_array_equal(model.params["out.bias"], own)
    other = EMA(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert (other.decay, other.updates) == (0.5, 3)
    np.testing.assert_array_equal(other.average["out.bias"], want)
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        EMA(model, decay=1.0)


def test_ema_changes_no_training_step_is_validated_saved_and_resumed_exactly(data, tmp_path):
    plain = Trainer(small_cfg(dropout=0.3), *data, tmp_path / "plain", progress=False)
    plain.run()
    cfg = small_cfg(dropout=0.3, ema=0.9, val_plain=True)
    full = Trainer(cfg, *data, tmp_path / "full", progress=False)
    full.run()
    for k, v in params(plain.model).items():            # the average trains nothing
        np.testing.assert_array_equal(full.model.params[k], v)
    # the checkpoints ship the average as the model; the raw parameters stay for resuming
    latest = tmp_path / "full" / "latest.npz"
    averaged, meta = model_from_checkpoint(latest)
    raw, _ = model_from_checkpoint(latest, average=False)
    assert meta["ema"] == dict(decay=0.9, updates=6)
    for k in full.model.params:
        np.testing.assert_array_equal(averaged.params[k], full.ema.average[k])
        np.testing.assert_array_equal(raw.params[k], full.model.params[k])
    assert not np.array_equal(averaged.params["out.weight"], raw.params["out.weight"])
    # validation (and so best.npz) is on the average; val_plain on the raw parameters
    log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    last = [r for r in log if "val" in r][-1]
    assert last["val"] == full.validate(model=averaged)
    assert last["val_plain"] == full.validate(plain=True)
    plain_log = [r for r in map(json.loads, (tmp_path / "plain" / "log.jsonl").read_text()
                                .splitlines()) if "val" in r]
    assert [r["val_plain"] for r in log if "val" in r] == [r["val"] for r in plain_log]

    def stop_at_4(trainer):
        if trainer.step == 4:
            raise KeyboardInterrupt

    part = Trainer(cfg, *data, tmp_path / "part", progress=False, callback=stop_at_4)
    with pytest.raises(KeyboardInterrupt):
        part.run()
    resumed = Trainer(cfg, *data, tmp_path / "part", resume=True, progress=False)
    assert resumed.ema.updates == 4
    resumed.run()
    for k in full.model.params:
        np.testing.assert_array_equal(resumed.ema.average[k], full.ema.average[k])
        np.testing.assert_array_equal(resumed.model.params[k], full.model.params[k])


def test_progress_in_a_log_file_is_plain_lines_not_a_bar(data, tmp_path, capsys, monkeypatch):
    """Where stderr is not a terminal (nohup, a scheduler's log): no carriage returns, a line
    every line_seconds and one at the end, and the validation lines."""
    monkeypatch.setattr(Trainer, "line_seconds", 1e9)
    Trainer(small_cfg(), *data, tmp_path / "quiet", progress=True).run()
    out = capsys.readouterr()
    assert "\r" not in out.err and "\r" not in out.out
    assert len(out.err.splitlines()) == 1 and out.err.startswith("step 6/6: loss ")
    assert [line.split(":")[0] for line in out.out.splitlines()] == ["before training",
                                                                    "step 3", "step 6"]
    monkeypatch.setattr(Trainer, "line_seconds", 0.0)
    Trainer(small_cfg(), *data, tmp_path / "every", progress=True).run()
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == [f"step {k}/6" for k in range(1, 7)]


def test_the_average_takes_in_each_steps_new_weights(data, tmp_path):
    """--ema: after each step a <- d a + (1 - d) w, w the step's new weights, d_t = (1+t)/(10+t)."""
    # Adam moves every weight by about lr a step: far more than float32 rounding
    t = Trainer(small_cfg(ema=0.5, optimizer="adam", lr=0.01, warmup=0), *data, tmp_path / "run",
                progress=False)
    for k, d in enumerate([1 / 10, 2 / 11, 0.25]):        # d_t for t = 0, 1, 2 (decay 0.5)
        average = {name: a.copy() for name, a in t.ema.average.items()}
        w_before = params(t.model)
        t.train_step()
        for name, w in t.model.params.items():
            moved = np.abs(w - w_before[name]).max()
            assert moved > 1e-3, name                       # the step changed the weights
            want = d * average[name].astype(np.float64) + (1 - d) * w.astype(np.float64)
            np.testing.assert_allclose(t.ema.average[name], want, rtol=0, atol=1e-3 * moved,
                                       err_msg=f"step {k}: {name}")
    assert t.ema.updates == 3


def test_final_report_scores_each_checkpoints_own_average(data, tmp_path, monkeypatch):
    """final_metrics.json scores best.npz's and latest.npz's moving averages, each its own,
    plain (whatever the run validated with: here TTA) and with TTA, on the device asked for
    (not $TINYUNET_DEVICE's), and says which data the run trained on."""
    from tinyunet import UNet, train
    from tinyunet.checkpoint import save_checkpoint
    from tinyunet.optim import EMA, SGD
    from tinyunet.train import final_report
    t = Trainer(small_cfg(steps=3, val_every=3, ema=0.5, val_tta=True,
                          data=dict(source="/data/isbi2012", labels="membranes")),
                *data, tmp_path / "run", progress=False)
    t.run()
    loaded = []

    def spy(*args, **kw):                                # the device each model is scored on
        model, meta = model_from_checkpoint(*args, **kw)
        loaded.append(model.device)
        return model, meta
    monkeypatch.setattr(train, "model_from_checkpoint", spy)
    # a best checkpoint unlike the last one: raw parameters of seed 5, their average seed 6's
    raw = UNet(base_channels=2, depth=2, seed=5)
    average = UNet(base_channels=2, depth=2, seed=6)
    ema = EMA(raw, 0.5)
    ema.load_state_dict(dict(decay=0.5, updates=2, average=average.params))
    save_checkpoint(tmp_path / "run" / "best.npz", raw, SGD(raw, 0.01), 2, t._extra(), ema)
    monkeypatch.setenv("TINYUNET_DEVICE", "gpu")
    final = final_report(t, "cpu")
    assert loaded == ["cpu", "cpu"]
    monkeypatch.undo()
    last, _ = model_from_checkpoint(tmp_path / "run" / "latest.npz")

    def scores(model):
        return {"plain": t.validate(tta=False, topology=True, model=model),
                "tta": t.validate(tta=True, topology=True, model=model)}
    want_best, want_last = scores(average), scores(last)
    assert want_best != want_last and want_best != scores(raw)     # the case tells them apart
    assert want_best["plain"] != want_best["tta"]
    assert (final["step"], final["last"]["step"], final["data"]) == (2, 3, "/data/isbi2012")
    assert {k: final[k] for k in ("plain", "tta")} == want_best
    assert {k: final["last"][k] for k in ("plain", "tta")} == want_last
    assert json.loads((tmp_path / "run" / "final_metrics.json").read_text()) == json.loads(
        json.dumps(final))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A folder of 4 image/label pairs of 48 x 48 (the train command's --data)."""
    import tifffile
    folder = tmp_path_factory.mktemp("pairs")
    images, labels = synthetic_em(n=4, size=48, cell_size=16, seed=1)
    for k in range(4):
        tifffile.imwrite(folder / f"{k:03d}_image.tif", images[k])
        tifffile.imwrite(folder / f"{k:03d}_label.tif", labels[k])
    return folder


@pytest.mark.parametrize("started, resumed", [(0.5, "0.9"), (0.5, "0"), (None, "0.9")])
def test_ema_cannot_change_on_resume(started, resumed, pairs, tmp_path, capsys, monkeypatch):
    """Resuming with another --ema (0 too) is one error line naming the run's; nothing changes."""
    from tinyunet import config
    from tinyunet.commands import train as command

    from .conftest import error_line, run_example
    monkeypatch.setitem(config.PRESETS, "tiny", dict(base_channels=2, depth=2, tile=92,
                                                     warmup=1, log_every=1))
    ema = ["--ema", str(started)] if started else []
    code, _, err = run_example(command.main, ["--data", pairs, "--preset", "tiny", "--steps", "1",
                                              "--val-every", "1", "--out", tmp_path] + ema,
                               capsys)
    assert code == 0, err
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    err = error_line(command.main, ["--resume", run, "--steps", "2", "--ema", resumed], capsys)
    assert f"--ema: this run has ema = {started or 0.0!r}, fixed once a run has started" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    # the run's own --ema resumes it
    code, _, err = run_example(command.main, ["--resume", run, "--steps", "2", "--ema",
                                              str(started or 0)], capsys)
    assert code == 0, err
    assert load_checkpoint(run / "latest.npz")[0]["ema"] == (
        dict(decay=started, updates=2) if started else None)


@pytest.mark.parametrize("started, resumed", [(0.5, 0.9), (0.5, 0.0), (0.0, 0.9)])
def test_a_trainer_refuses_to_resume_with_another_average(started, resumed, tmp_path):
    """Trainer(resume=True) refuses another ema decay (0 too), naming both; its own resumes."""
    from .conftest import small_config, small_data, small_trainer
    data = small_data()
    small_trainer(tmp_path / "run", data, steps=1, ema=started).run()
    before = (tmp_path / "run" / "latest.npz").read_bytes()
    with pytest.raises(CheckpointError, match=rf"trained with ema = {started}, not {resumed} "
                                              r"\(0: off\): the moving average is fixed"):
        Trainer(small_config(steps=2, ema=resumed), *data, tmp_path / "run", resume=True,
                progress=False)
    assert (tmp_path / "run" / "latest.npz").read_bytes() == before
    resumed_run = Trainer(small_config(steps=2, ema=started), *data, tmp_path / "run",
                          resume=True, progress=False)
    resumed_run.run()
    assert resumed_run.step == 2


def test_a_resume_names_what_differs_in_the_model(data, tmp_path):
    """A run resumed with another model: the message lists only the settings that differ, as
    (checkpoint, now)."""
    Trainer(small_cfg(), *data, tmp_path / "run", progress=False).lock.close()   # at step 0
    path = tmp_path / "run" / "latest.npz"
    with pytest.raises(CheckpointError) as e:
        Trainer(small_cfg(base_channels=4), *data, tmp_path / "run", resume=True, progress=False)
    assert str(e.value) == (f"{path} was written by a different model: (checkpoint, now) = "
                            "{'base_channels': (2, 4)}")


def _with_mean(path, factor):
    """The checkpoint at `path` with its recorded grey-value mean times `factor`."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["mean"] *= factor
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize("factor, refused", [(1 + 1e-8, True), (1 - 1e-7, True),
                                             (1 + 1e-10, False)])
def test_a_resume_takes_only_the_same_normalisation(data, tmp_path, factor, refused):
    """The mean and std are the training images' own: a resume refuses numbers that differ by
    more than rounding (a relative 1e-9; here the mean is about 0.5, so 1e-8 of it is 5e-9:
    one grey value in one pixel of these 3 64 x 64 images moves it 3e-7)."""
    Trainer(small_cfg(), *data, tmp_path / "run", progress=False).lock.close()   # at step 0
    _with_mean(tmp_path / "run" / "latest.npz", factor)
    if refused:
        with pytest.raises(CheckpointError, match="was trained on other data: grey-value "
                                                  "mean/std"):
            Trainer(small_cfg(), *data, tmp_path / "run", resume=True, progress=False)
    else:
        Trainer(small_cfg(), *data, tmp_path / "run", resume=True, progress=False).lock.close()


class _Stream(io.StringIO):
    """A stand-in for stderr: a terminal or not (isatty), keeping what was there at each flush."""

    def __init__(self, tty):
        super().__init__()
        self.tty, self.flushed = tty, []

    def isatty(self):
        return self.tty

    def flush(self):
        self.flushed.append(self.getvalue())
        super().flush()


@pytest.mark.parametrize("signum, name", [("SIGINT", "Ctrl-C"), ("SIGTERM", "SIGTERM"),
                                          ("SIGHUP", "SIGHUP")])
def test_a_signal_stops_the_run_after_its_step_saves_it_and_says_which(data, tmp_path, capsys,
                                                                      signum, name):
    """Ctrl-C, SIGTERM or SIGHUP during a step: the run says which signal came, and that a
    second one stops at once; it finishes the step, saves it and stops (Stopped, with the
    signal's number for the exit status)."""
    import os
    import signal

    from tinyunet.rundir import Stopped
    signum = getattr(signal, signum)

    def signal_at_2(trainer):
        if trainer.step == 2:
            os.kill(os.getpid(), signum)

    t = Trainer(small_cfg(steps=3, val_every=3), *data, tmp_path / "run", progress=False,
                callback=signal_at_2)
    with pytest.raises(Stopped, match=r"^stopped at step 2; checkpoint saved in ") as e:
        t.run()
    assert e.value.signum == signum
    assert (f"{name}: stopping after this step and saving it ({name} again to stop at once)\n"
            in capsys.readouterr().out)
    assert load_checkpoint(tmp_path / "run" / "latest.npz")[0]["step"] == 2


def test_a_second_signal_stops_at_once_and_a_resume_goes_back_to_the_checkpoints_log(
        data, tmp_path):
    """Two signals: the run stops at once without saving and names the checkpoint that stands
    (here the step-4 one it was resumed from); resumed from it, log.jsonl goes back to the
    lines that checkpoint had (the step-5 line written after it goes), so the log ends as an
    uninterrupted run's would, each step once. A run whose log.jsonl was removed resumes with
    an empty one."""
    import os
    import signal

    from tinyunet.rundir import Stopped
    run = tmp_path / "run"

    def stop_at_4(trainer):
        if trainer.step == 4:
            raise KeyboardInterrupt

    def twice_at_5(trainer):
        if trainer.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Stopped):
        Trainer(small_cfg(), *data, run, progress=False, callback=stop_at_4).run()
    resumed = Trainer(small_cfg(), *data, run, resume=True, progress=False, callback=twice_at_5)
    with pytest.raises(Stopped) as e:
        resumed.run()
    assert str(e.value) == (f"stopped at once at step 5; the last checkpoint, of step 4, is in "
                            f"{run / 'latest.npz'}")
    assert e.value.signum == signal.SIGTERM
    assert load_checkpoint(run / "latest.npz")[0]["step"] == 4
    assert resumed.read_log()[-1]["step"] == 5                  # logged, but not saved

    def steps(trainer):             # (step, a validation?) of each line; val_every 3, log_every 1
        return [(r["step"], "val" in r) for r in trainer.read_log()]
    again = Trainer(small_cfg(), *data, run, resume=True, progress=False)
    assert steps(again) == [(0, True), (1, False), (2, False), (3, False), (3, True), (4, False)]
    again.run()
    assert steps(again)[6:] == [(5, False), (6, False), (6, True)]
    (run / "log.jsonl").unlink()
    last = Trainer(small_cfg(steps=7), *data, run, resume=True, progress=False)
    assert last.read_log() == [] and last.log_lines == 0
    last.run()
    assert steps(last) == [(7, False), (7, True)]


def test_a_finished_run_whose_log_was_removed_resumes_to_a_validation_of_its_model(data,
                                                                                  tmp_path):
    """Resumed at its last step with log.jsonl gone, a run has no step to train and no
    validation in its log: run() validates the model as it stands (the numbers the last
    validation gave) instead of failing on the empty log."""
    run = tmp_path / "run"
    done = Trainer(small_cfg(), *data, run, progress=False)
    last = done.run()
    (run / "log.jsonl").unlink()
    again = Trainer(small_cfg(), *data, run, resume=True, progress=False)
    assert again.run() == last and again.read_log() == []


def test_a_log_record_and_its_progress_line_give_the_step_loss_lr_and_time(data, tmp_path,
                                                                          monkeypatch):
    """A logged step's record: its loss, the learning rate its update used (warm-up 2 and the
    step schedule, lr 0.01: 0.005, then 0.01, and 0.001 from 2/3 of the 4 steps after the
    warm-up), and the seconds of training so far as the clock read them when it was logged
    (here a clock that moves 600.25 s at each reading: multiples of it, not rounded to whole
    seconds); the progress line in a log file gives the same numbers, the time in minutes of
    the same reading, and is flushed as it is written (a `tail -f` of a block-buffered file
    shows it at once)."""
    from types import SimpleNamespace

    from tinyunet import train
    tick, reads = 600.25, [0]

    def clock():
        reads[0] += 1
        return reads[0] * tick

    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(Trainer, "line_seconds", 0.0)
    t = Trainer(small_cfg(steps=6, warmup=2, lr=0.01, lr_schedule="step", val_every=6), *data,
                tmp_path / "run", progress=True)
    err = _Stream(tty=False)
    monkeypatch.setattr("sys.stderr", err)
    t.run()
    records = [r for r in t.read_log() if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in records] == pytest.approx([0.005, 0.01, 0.01, 0.01, 0.01, 0.001],
                                                       rel=1e-12)
    for r in records:
        k = r["seconds"] / tick
        assert k >= 1 and k == round(k), r["seconds"]
    lines = err.getvalue().splitlines()
    assert lines == [f"step {r['step']}/6: loss {r['loss']:.4f}, lr {r['lr']:.2e}, "
                     f"{r['seconds'] / 60:.1f} min" for r in records]
    assert all(any(f.endswith(line + "\n") for f in err.flushed) for line in lines)


def test_progress_on_a_terminal_is_a_bar(data, tmp_path, monkeypatch):
    """On a terminal the progress is a bar that redraws itself (carriage returns): "training",
    steps done of the run's steps, a rate in steps; no plain lines."""
    import re
    t = Trainer(small_cfg(steps=3, val_every=3), *data, tmp_path / "run", progress=True)
    err = _Stream(tty=True)
    monkeypatch.setattr("sys.stderr", err)
    t.run()
    text = err.getvalue()
    assert "\r" in text and "training:" in text and "3/3 [" in text
    assert re.search(r"[\d?](step/s|s/step)", text), text
    assert "step 3/3:" not in text
