"""A run's settings (tinyunet/config.py), each rule stated with its worked case: the presets are
the ones the module's docstring and the paper describe, every range check accepts its edge and
refuses what lies just past it, the learning-rate schedule is the formula written out, and a
resumed run changes only what it may."""
import dataclasses
import math
import re

import pytest

from tinyunet import config
from tinyunet.config import PRESETS, RESUMABLE, TrainConfig, learning_rate


def documented_presets():
    """The presets as the docstring of tinyunet/config.py lists them: name -> its line(s)."""
    lines = config.__doc__.split("The presets are")[1].splitlines()[1:]
    out, name = {}, None
    for line in lines:
        m = re.match(r"\s{4}(\w+)\s{2,}(.*)", line)
        if m:
            name, out[m[1]] = m[1], m[2]
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out


def test_the_presets_are_the_documented_ones():
    """Each preset's network, tile, optimizer, learning rate, steps and averaging as the
    docstring says (and the paper's as the paper has them: base 64, depth 4, 572 tile, SGD with
    momentum 0.99); a preset that the docstring does not list, or one it lists that does not
    exist, fails too."""
    docs = documented_presets()
    assert set(docs) == set(PRESETS)
    expect = {
        "tiny": dict(base_channels=8, depth=3, tile=148, optimizer="sgd", lr=0.004, steps=400,
                     ema=0.0),
        "cpu": dict(base_channels=16, depth=4, tile=380, optimizer="adam", lr=5e-4, steps=18000,
                    ema=0.999),
        "paper": dict(base_channels=64, depth=4, tile=572, optimizer="sgd", momentum=0.99),
        "cells": dict(base_channels=16, depth=4, tile=380, optimizer="adam", lr=5e-4,
                      steps=10000, ema=0.999, border=2, min_cell=100, threshold=0.7),
    }
    for name, want in expect.items():
        cfg = TrainConfig.from_preset(name).check()
        assert cfg.preset == name
        assert {k: getattr(cfg, k) for k in want} == want, name
        text = docs[name]
        network = ["base_channels", "depth", "tile", "optimizer", "lr"]
        if "the cpu network and optimizer" in text:     # said once, in the cpu preset's line
            cpu = TrainConfig.from_preset("cpu")
            assert [getattr(cfg, k) for k in network] == [getattr(cpu, k) for k in network]
        else:
            for k, word in [("base_channels", "base"), ("depth", "depth"), ("tile", "tile")]:
                assert f"{word} {getattr(cfg, k)}" in text, (name, k, text)
            assert cfg.optimizer.upper() in text.upper()
        assert f"{cfg.steps} steps" in text, (name, text)
        assert ("EMA" in text or "averaged weights" in text) == (cfg.ema > 0), name
    assert "borders of 2 px" in docs["cells"] and "smaller than 100 px" in docs["cells"]


def test_every_preset_augments_the_papers_way_and_wide_is_an_option():
    """No preset changes augment: each is "paper", as the module's docstring says; "wide" is
    the one other kind (data/samples.py)."""
    assert 'Every preset augments its tiles the paper\'s way (augment "paper"' in " ".join(
        config.__doc__.split())
    for name in PRESETS:
        assert TrainConfig.from_preset(name).augment == "paper", name
    assert TrainConfig.from_preset("cpu", augment="wide").check().augment == "wide"


def test_the_defaults_are_the_tiny_preset_and_overrides_win():
    assert TrainConfig() == TrainConfig.from_preset("tiny")
    cfg = TrainConfig.from_preset("cpu", steps=7, lr=0.1)
    assert (cfg.steps, cfg.lr, cfg.base_channels) == (7, 0.1, 16)
    with pytest.raises(ValueError, match=r"unknown preset 'gpu': valid presets are \['paper', "
                                         r"'cpu', 'tiny', 'cells'\]"):
        TrainConfig.from_preset("gpu")
    with pytest.raises(ValueError, match=r"unknown settings \['stepz'\]"):
        TrainConfig.from_preset("cpu", stepz=3)


# (setting, the edge that is valid, a value just past it, what the message says is valid)
EDGES = [("steps", 1, 0, ">= 1"), ("lr", 1e-12, 0.0, "> 0"), ("val_every", 1, 0, ">= 1"),
         ("log_every", 1, 0, ">= 1"), ("warmup", 0, -1, ">= 0"),
         ("lr_floor", 1.0, 1.01, "in (0, 1]"), ("lr_floor", 1e-9, 0.0, "in (0, 1]"),
         ("momentum", 0.0, -1e-9, "in [0, 1)"), ("momentum", 0.999999, 1.0, "in [0, 1)"),
         ("weight_decay", 0.0, -1e-9, ">= 0"), ("dropout", 0.0, -0.1, "in [0, 1)"),
         ("dropout", 0.99, 1.0, "in [0, 1)"), ("ema", 0.0, -0.5, r"in [0, 1) (0: off)"),
         ("ema", 0.9999, 1.0, r"in [0, 1) (0: off)"), ("seed", 0, -1, ">= 0"),
         ("w0", 0.0, -1.0, ">= 0"), ("sigma", 1e-9, 0.0, "> 0"), ("border", 0, -1, ">= 0"),
         ("min_cell", 0, -1, ">= 0"), ("threshold", 1e-9, 0.0, "in (0, 1)"),
         ("threshold", 0.999, 1.0, "in (0, 1)"),
         ("labels", "instances", "cells", "'membranes' or 'instances'"),
         ("weighting", "paper", "papers", None), ("augment", "wide", "wider",
                                                   "'paper' or 'wide'"),
         ("optimizer", "adam", "rmsprop",
                                                  "'sgd' or 'adam'"),
         ("lr_schedule", "step", "linear", "'constant', 'cosine' or 'step'")]


@pytest.mark.parametrize("name, edge, past, valid", EDGES)
def test_each_range_accepts_its_edge_and_refuses_just_past_it(name, edge, past, valid):
    TrainConfig(**{name: edge}).check()
    with pytest.raises(ValueError) as e:
        TrainConfig(**{name: past}).check()
    assert str(e.value).startswith(f"{name} must be ")
    assert str(e.value).endswith(f", got {past!r}")
    if valid:
        assert str(e.value) == f"{name} must be {valid}, got {past!r}"


def test_every_setting_with_a_range_is_checked():
    """Every numeric or named setting of TrainConfig has its row in EDGES, but those that any
    value may take (the booleans, the preset's name, the device, the data record and the model
    to start from, checked where they are used)."""
    free = {"preset", "elastic", "val_tta", "val_plain", "device", "data", "base_channels",
            "depth", "tile", "init"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields - free == {row[0] for row in EDGES}


def test_the_tile_must_suit_the_depth():
    TrainConfig(tile=148, depth=3).check()
    with pytest.raises(ValueError, match="tile size"):
        TrainConfig(tile=150, depth=3).check()


def reference_rate(lr, warmup, steps, schedule, step, floor=0.01):
    """The schedule as docs and docstrings state it, written out: a linear warm-up from lr /
    warmup to lr over `warmup` steps, then constant; or cosine from lr down to lr / 100 at the
    last step (and held there); or lr, then lr / 10 from two thirds of the way on; after the
    warm-up, never below lr * floor."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    if schedule == "constant":
        rate = lr
    elif schedule == "step":
        rate = lr / 10 if frac >= 2 / 3 else lr
    else:
        frac = min(frac, 1.0)
        rate = lr / 100 + (lr - lr / 100) * (1 + math.cos(math.pi * frac)) / 2
    return max(rate, lr * floor)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
@pytest.mark.parametrize("warmup", [0, 1, 10])
@pytest.mark.parametrize("floor", [0.01, 0.1, 0.5])
def test_the_learning_rate_follows_its_formula(schedule, warmup, floor):
    cfg = TrainConfig(lr=0.3, warmup=warmup, steps=100, lr_schedule=schedule, lr_floor=floor)
    for step in [0, 1, 5, 9, 10, 11, 49, 55, 69, 70, 71, 99, 100, 150]:
        assert learning_rate(cfg, step) == pytest.approx(
            reference_rate(0.3, warmup, 100, schedule, step, floor), rel=1e-12), step


def test_the_schedules_worked_points():
    """Worked by hand: 100 steps, lr 1, warm-up 10 (so 90 scheduled steps, two thirds at 70)."""
    cos = TrainConfig(lr=1.0, warmup=10, steps=100, lr_schedule="cosine")
    assert [learning_rate(cos, s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert learning_rate(cos, 10) == pytest.approx(1.0)
    assert learning_rate(cos, 55) == pytest.approx(0.505)          # half way: (1 + 0.01) / 2
    assert learning_rate(cos, 100) == pytest.approx(0.01)          # the end: lr / 100
    assert learning_rate(cos, 500) == pytest.approx(0.01)
    step = TrainConfig(lr=1.0, warmup=10, steps=100, lr_schedule="step")
    assert [learning_rate(step, s) for s in (69, 70)] == pytest.approx([1.0, 0.1])
    # a run as long as its warm-up: the schedule divides by one step, not by zero
    short = TrainConfig(lr=1.0, warmup=5, steps=5, lr_schedule="step")
    assert [learning_rate(short, s) for s in (4, 5, 6)] == pytest.approx([1.0, 1.0, 0.1])
    # a floor of 0.1 leaves the cosine alone until it reaches lr / 10 (0.01 + 0.99 (1 + cos) / 2
    # = 0.1 at 80.5 % of the way: step 82.4), then holds it there; the warm-up is not floored
    held = TrainConfig(lr=1.0, warmup=10, steps=100, lr_schedule="cosine", lr_floor=0.1)
    assert [learning_rate(held, s) for s in (0, 55, 82)] == pytest.approx(
        [learning_rate(cos, s) for s in (0, 55, 82)])
    assert learning_rate(held, 82) > 0.1
    assert [learning_rate(held, s) for s in (83, 90, 100, 500)] == pytest.approx([0.1] * 4)


def test_a_resumed_run_changes_only_what_it_may():
    saved = dataclasses.asdict(TrainConfig.from_preset("cpu", steps=100))
    assert set(RESUMABLE) == {"steps", "val_every", "val_tta", "val_plain"}
    cfg = TrainConfig.resumed(saved, dict(steps=200, val_every=5, val_tta=True, val_plain=True,
                                          lr=saved["lr"]), device="cpu")
    assert (cfg.steps, cfg.val_every, cfg.val_tta, cfg.val_plain) == (200, 5, True, True)
    assert (cfg.preset, cfg.base_channels, cfg.device) == ("cpu", 16, "cpu")
    with pytest.raises(ValueError) as e:
        TrainConfig.resumed(saved, dict(lr=0.1))
    assert str(e.value) == ("--lr: this run has lr = 0.0005, fixed once a run has started (a "
                            "resumed run may change only --steps, --val-every, --val-tta and "
                            "--val-plain); start a new run to change it")
    with pytest.raises(ValueError, match="^--no-elastic: this run has elastic = True"):
        TrainConfig.resumed(saved, dict(elastic=False))
    with pytest.raises(ValueError, match="^--augment: this run has augment = 'paper', fixed"):
        TrainConfig.resumed(saved, dict(augment="wide"))
    assert TrainConfig.resumed(saved, dict(augment="paper")).augment == "paper"
    assert TrainConfig.resumed({**saved, "augment": "wide"}, {}).augment == "wide"
    with pytest.raises(ValueError, match="^--base-channels: this run has base_channels = 16"):
        TrainConfig.resumed(saved, dict(base_channels=8))
    with pytest.raises(ValueError, match=r"^--preset tiny is not this run's preset \('cpu'\): "
                                         r"leave it out to resume$"):
        TrainConfig.resumed(saved, {}, preset="tiny")
    assert TrainConfig.resumed(saved, {}, preset="cpu").preset == "cpu"
    # a setting the run's config.json does not have yet (an older run) may be given
    older = {k: v for k, v in saved.items() if k != "min_cell"}
    assert TrainConfig.resumed(older, dict(min_cell=7)).min_cell == 7
    with pytest.raises(ValueError, match=r"^config.json has settings this version does not "
                                         r"know \(.*'colour'"):
        TrainConfig.resumed({**saved, "colour": "red"}, {})


def test_the_best_step_may_be_the_first_training_step():
    """Step 0 (the untrained network) is never the best, step 1 may be."""
    from tinyunet.config import best_step
    log = [{"step": s, "val": {"rand_error": e}} for s, e in [(0, 0.1), (1, 0.2), (2, 0.3)]]
    assert best_step(log, "membranes") == 1
