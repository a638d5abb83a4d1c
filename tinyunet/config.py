"""A training run's settings: the presets, TrainConfig (a run's config.json), the learning-rate
schedule, and what a resumed run may change.

Every preset augments its tiles the paper's way (augment "paper": elastic deformation, flips and
rotations, gain and offset ~ N(0, 0.1)); augment "wide" widens the grey-value change (gain and
offset ~ N(0, 0.3), a random blur and noise: data/samples.py) for data whose brightness,
contrast and focus vary more than the training frames show.

The presets are the network, tile and recipe for a machine:
    tiny    TrainConfig's defaults: base 8, depth 3, tile 148, SGD lr 0.004, 400 steps (the
            built-in synthetic set, about a minute on a CPU)
    cpu     the laptop study's winner (studies/laptop/): base 16, depth 4, tile 380, Adam
            lr 5e-4, 18000 steps (96.6 minutes alone on 2 cores, measured by
            benchmarks/bench_wallclock.py), averaged weights (EMA 0.999)
    paper   the paper's network and tile: base 64, depth 4, tile 572, SGD with momentum 0.99,
            lr 0.001, 20000 steps
    cells   touching cells from instance masks (docs/15-cells.md): the cpu network and optimizer,
            10000 steps (60.7 minutes alone on 2 cores on DIC-HeLa, measured by
            benchmarks/bench_wallclock.py), averaged weights, separation borders of 2 px,
            cells where P(cell) > 0.7 (the threshold chosen on the silver truth of frames
            never trained on: studies/cells/thresholds.md; a model's own is chosen the same
            way when it is shipped: tinyunet ship --threshold silver), those smaller than
            100 px dropped
"""
import dataclasses
import math

from .data.samples import AUGMENTS
from .data.targets import LABEL_KINDS, WEIGHTINGS
from .model import check_input_size

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine", "step")

PRESETS = {
    "paper": dict(base_channels=64, depth=4, tile=572, lr=0.001, steps=20000),
    # the averaged weights (ema): studies/averaged-weights/
    "cpu": dict(base_channels=16, depth=4, tile=380, optimizer="adam", lr=0.0005, steps=18000,
                val_every=500, ema=0.999),
    "tiny": dict(),                                 # TrainConfig's defaults
    # touching cells (instance labels: the cell tracking challenge's sets, docs/15-cells.md)
    "cells": dict(base_channels=16, depth=4, tile=380, optimizer="adam", lr=0.0005, steps=10000,
                  val_every=500, ema=0.999, border=2, min_cell=100, threshold=0.7),
}

# what best.npz is chosen by: (the validation score, its sign; the lowest sign * score wins)
BEST = {"membranes": ("rand_error", 1), "instances": ("seg", -1)}


def best_score(val, labels):
    """What best.npz is chosen by, lower is better: a validation's Rand error (labels
    "membranes") or minus its SEG ("instances"); a validation with no score (NaN: no reference
    cell) is never the best (inf). The one place that decides the best checkpoint."""
    key, sign = BEST[labels]
    score = sign * val[key]
    return math.inf if math.isnan(score) else score


def best_step(log, labels):
    """The step of a run's best.npz from its log.jsonl records: the first best validation after
    a training step (a run also logs a validation at step 0, never the best); None where there
    is none, or none with a score (the run then writes no best.npz)."""
    va = [r for r in log if "val" in r and r["step"] > 0]
    best = min(va, key=lambda r: best_score(r["val"], labels)) if va else None
    return best["step"] if best and best_score(best["val"], labels) < math.inf else None

# settings a resumed run may change (a longer run, other validations); the others are fixed
RESUMABLE = ("steps", "val_every", "val_tta", "val_plain")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; saved as config.json in the run directory. The defaults are the
    tiny preset."""
    preset: str = "tiny"
    base_channels: int = 8
    depth: int = 3
    tile: int = 148
    steps: int = 400
    lr: float = 0.004
    optimizer: str = "sgd"             # "sgd" (paper: momentum 0.99) or "adam"
    momentum: float = 0.99
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"        # "constant", "cosine" (to lr/100), "step" (/10 at 2/3)
    warmup: int = 50                   # linear warm-up steps (momentum 0.99 starts violently)
    lr_floor: float = 0.01             # after warm-up the rate never falls below lr * lr_floor
                                       # (0.01: the cosine's own end, so no clipping)
    labels: str = "membranes"          # "membranes" (ISBI) or "instances" (data/targets.py)
    border: int = 2                    # instances: the separation border's width, px
    min_cell: int = 0                  # instances: predicted cells smaller than this are dropped
    threshold: float = 0.5             # instances: P(cell) above which a pixel is a cell's
    weighting: str = "paper"           # one of WEIGHTINGS
    w0: float = 10.0
    sigma: float = 5.0
    elastic: bool = True
    augment: str = "paper"             # the grey-value change: one of AUGMENTS (data/samples.py)
    dropout: float = 0.0
    ema: float = 0.0                   # decay of the parameters' moving average (0: off)
    val_every: int = 100
    val_tta: bool = False
    val_plain: bool = False            # with ema: validate the raw parameters too
    log_every: int = 10
    seed: int = 0
    device: str = None                 # "cpu", "gpu"; None: $TINYUNET_DEVICE, else the CPU
    data: dict = None                  # where the data came from (data.selection's record)
    init: str = None                   # a new run's first weights: a shipped model's name or a
                                       # checkpoint file (fine-tuning); None: random (paper)

    @classmethod
    def from_preset(cls, preset, **overrides):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: valid presets are {list(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in overrides if k not in fields]
        if bad:
            raise ValueError(f"unknown settings {bad}")
        return cls(preset=preset, **{**PRESETS[preset], **overrides})

    def check(self):
        """Raise ValueError naming the first setting out of range; returns self."""
        check_input_size(self.tile, self.depth, "tile size")
        for name, ok, valid in [
                ("steps", self.steps >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                ("val_every", self.val_every >= 1, ">= 1"),
                ("log_every", self.log_every >= 1, ">= 1"), ("warmup", self.warmup >= 0, ">= 0"),
                ("lr_floor", 0 < self.lr_floor <= 1, "in (0, 1]"),
                ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                ("weight_decay", self.weight_decay >= 0, ">= 0"),
                ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                ("ema", 0 <= self.ema < 1, "in [0, 1) (0: off)"),
                ("seed", self.seed >= 0, ">= 0"), ("w0", self.w0 >= 0, ">= 0"),
                ("sigma", self.sigma > 0, "> 0"), ("border", self.border >= 0, ">= 0"),
                ("min_cell", self.min_cell >= 0, ">= 0"),
                ("threshold", 0 < self.threshold < 1, "in (0, 1)"),
                ("labels", self.labels in LABEL_KINDS, _one_of(LABEL_KINDS)),
                ("weighting", self.weighting in WEIGHTINGS, _one_of(WEIGHTINGS)),
                ("augment", self.augment in AUGMENTS, _one_of(AUGMENTS)),
                ("optimizer", self.optimizer in OPTIMIZERS, _one_of(OPTIMIZERS)),
                ("lr_schedule", self.lr_schedule in LR_SCHEDULES, _one_of(LR_SCHEDULES))]:
            if not ok:
                raise ValueError(f"{name} must be {valid}, got {getattr(self, name)!r}")
        return self

    @classmethod
    def resumed(cls, saved, overrides, preset=None, **run):
        """The config of a resumed run: its config.json (`saved`) with `overrides`, of which
        only the RESUMABLE settings may differ from the run's; `run`: settings of this process
        (device, data). A ValueError names a setting that may not change."""
        if preset and preset != saved.get("preset"):
            raise ValueError(f"--preset {preset} is not this run's preset "
                             f"({saved.get('preset')!r}): leave it out to resume")
        for k, v in overrides.items():
            if k not in RESUMABLE and k in saved and saved[k] != v:
                flag = "--no-elastic" if k == "elastic" else "--" + k.replace("_", "-")
                raise ValueError(f"{flag}: this run has {k} = {saved[k]!r}, fixed once a run "
                                 f"has started (a resumed run may change only --steps, "
                                 f"--val-every, --val-tta and --val-plain); start a new run to "
                                 f"change it")
        try:
            return cls(**{**saved, **overrides, **run})
        except TypeError as e:
            raise ValueError(f"config.json has settings this version does not know "
                             f"({e})") from None


def _one_of(names):
    return ", ".join(f"'{n}'" for n in names[:-1]) + f" or '{names[-1]}'"


def learning_rate(cfg, step):
    """The learning rate for step (0-based): linear warm-up, then the schedule, held at
    lr * lr_floor once the schedule falls below it (the cosine runs to lr / 100, so a floor
    of 0.1 leaves its first 80 % unchanged and holds the rest at lr / 10)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.lr_schedule == "cosine":
        scale = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    elif cfg.lr_schedule == "step":
        scale = 0.1 if frac >= 2 / 3 else 1.0
    else:
        scale = 1.0
    return cfg.lr * max(scale, cfg.lr_floor)
