"""Training pipeline: samples, checkpoints (atomic, round trip, errors), exact resume, Ctrl-C."""
import json

import numpy as np
import pytest

from tinyunet.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from tinyunet.config import TrainConfig, learning_rate
from tinyunet.data import normalise, synthetic_em
from tinyunet.data.samples import TileSampler, loss_weights
from tinyunet.files import atomic_write
from tinyunet.train import Trainer


@pytest.fixture(scope="module")
def data():
    images, labels = synthetic_em(n=4, size=64, cell_size=16, seed=1)
    return (images[:3], labels[:3]), (images[3:], labels[3:])


def small_cfg(**kw):
    base = dict(base_channels=2, depth=2, tile=92, steps=6, lr=0.01, warmup=2, val_every=3,
                log_every=1, seed=0)
    return TrainConfig(**{**base, **kw})


def params(model):
    return {k: v.copy() for k, v in model.params.items()}


def test_sample_labels_are_the_centre_of_the_input_tile(data):
    (images, labels), _ = data
    w = loss_weights(labels, "paper")
    s = TileSampler(normalise(images, 0.5, 0.25), labels, w, tile=92, out=52,
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
    s = TileSampler(normalise(images, 0.5, 0.25), labels, loss_weights(labels, "none"),
                    tile=92, out=52)
    rng = np.random.default_rng(1)
    for _ in range(3):
        _, y, wt = s.sample(rng)
        assert set(np.unique(y)) <= {0, 1}
        np.testing.assert_allclose(wt, 1.0)


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
