"""Fine-tuning (`--init MODEL`): a new run starts from a trained model's weights (its moving
average where its run kept one) with a fresh optimizer, schedule and average, takes the model's
width and depth, normalises by its own training images, and says in one line what does not fit."""
import json

import numpy as np
import pytest

from tinyunet import UNet
from tinyunet.checkpoint import CheckpointError, load_model, save_checkpoint
from tinyunet.commands import train as train_cmd
from tinyunet.optim import SGD

from .conftest import error_line, run_example, small_data, small_trainer


@pytest.fixture
def trained(tmp_path):
    """The latest.npz of a short run with averaged weights (base 2, depth 2)."""
    t = small_trainer(tmp_path / "first", steps=4, ema=0.5)
    t.run()
    t.lock.close()
    return tmp_path / "first" / "latest.npz"


def test_a_run_starts_from_the_models_weights_with_a_fresh_optimizer(trained, tmp_path):
    start, _ = load_model(trained)                        # the averaged weights, as shipped
    raw = UNet(base_channels=2, depth=2, seed=0).state_dict()
    assert any(not np.array_equal(start.params[k], raw[k]) for k in raw)
    t = small_trainer(tmp_path / "second", data=small_data(seed=3), init=str(trained),
                      ema=0.9, optimizer="adam")
    for k, v in t.model.params.items():
        np.testing.assert_array_equal(v, start.params[k])
        np.testing.assert_array_equal(t.ema.average[k], start.params[k])   # the average too
        assert not t.opt.m[k].any() and not t.opt.v[k].any()
    assert t.step == 0 and t.opt.steps == 0
    # normalised by its own images, not by the model's run's
    first = json.loads((trained.parent / "config.json").read_text())
    assert first["init"] is None
    assert json.loads((tmp_path / "second" / "config.json").read_text())["init"] == str(trained)
    t.run()
    t.lock.close()
    # resumed, it continues from its own checkpoint, not from the model again
    resumed = small_trainer_resume(tmp_path / "second", init=str(trained), ema=0.9,
                                   optimizer="adam", steps=8)
    assert resumed.step == 6
    for k, v in resumed.model.params.items():
        np.testing.assert_array_equal(v, t.model.params[k])


def small_trainer_resume(run_dir, **kw):
    from tinyunet.train import Trainer

    from .conftest import small_config
    return Trainer(small_config(**kw), *small_data(seed=3), run_dir, resume=True, progress=False)


def test_a_model_of_another_shape_is_refused_in_one_line(tmp_path):
    path = tmp_path / "three.npz"
    model = UNet(n_classes=3, base_channels=2, depth=2)
    save_checkpoint(path, model, SGD(model), 0, {})
    with pytest.raises(CheckpointError) as e:
        small_trainer(tmp_path / "run", init=str(path))
    assert str(e.value) == (f"init {path}: the model has n_classes 3 (this run: 2); a run that "
                            f"starts from a model takes its channels, classes, base_channels "
                            f"and depth")
    with pytest.raises(CheckpointError, match=r"the model has n_classes 3 \(this run: 2\), "
                                              r"base_channels 2 \(this run: 4\), depth 2 "
                                              r"\(this run: 3\);"):
        small_trainer(tmp_path / "run2", init=str(path), base_channels=4, depth=3, tile=124)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    from tinyunet import config
    monkeypatch.setitem(config.PRESETS, "tiny", dict(base_channels=2, depth=2, tile=92,
                                                    warmup=1, log_every=2, val_every=2))
    return ["--preset", "tiny", "--out", tmp_path / "runs"]


def test_the_command_takes_the_models_width_and_depth(trained, tiny, tmp_path, capsys):
    # the tiny preset here is base 2, depth 2: a model of base 4, depth 1 sets both
    path = tmp_path / "wide.npz"
    model = UNet(base_channels=4, depth=1, seed=5)
    save_checkpoint(path, model, SGD(model), 0, {})
    code, out, err = run_example(train_cmd.main, tiny + ["--init", path, "--steps", "2",
                                                         "--tile", "44"], capsys)
    assert code == 0, err
    assert "model: base 4, depth 1," in out and f", starting from {path}\n" in out
    run = next((tmp_path / "runs").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["base_channels"], cfg["depth"], cfg["init"]) == (4, 1, str(path))


def test_the_commands_mistakes_get_one_line(trained, tiny, tmp_path, capsys):
    err = error_line(train_cmd.main, tiny + ["--init", trained, "--depth", "3"], capsys)
    assert err == (f"error: --depth 3: the model of --init {trained} has depth 2, and a run "
                   f"that starts from it keeps it; leave --depth out, or train from scratch "
                   f"without --init\n")
    err = error_line(train_cmd.main, tiny + ["--init", "isbi2013"], capsys)
    assert err == ("error: --init isbi2013: no checkpoint at isbi2013; give a shipped model "
                   "(dic-hela, isbi2012, phc-u373) or a checkpoint (runs/<run>/latest.npz)\n")
    assert not (tmp_path / "runs").exists()               # nothing written
    # a run that started from random weights cannot be resumed as a fine-tuned one
    code, _, err = run_example(train_cmd.main, tiny + ["--steps", "2"], capsys)
    assert code == 0, err
    run = next((tmp_path / "runs").iterdir())
    err = error_line(train_cmd.main, ["--resume", run, "--steps", "4", "--init", trained],
                     capsys)
    assert err.startswith("error: --init: this run has init = None, fixed once a run has "
                          "started (a resumed run may change only --steps")
