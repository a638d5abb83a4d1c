"""Training a U-Net the paper's way: SGD with momentum 0.99, one large tile per step, the weighted
loss, elastic deformation; validation with the ISBI metrics; checkpoints that resume exactly.

A run lives in a folder (the run directory):
    config.json         the run's settings (the model is rebuilt from it on --resume)
    log.jsonl           one JSON object per logged step and per validation
    latest.npz          the latest checkpoint (model, optimizer, step, random states)
    best.npz            the best checkpoint by validation Rand error
    curves.png          training loss and validation metrics
    predictions.png     a validation slice: image, ground truth, probability map, weight map

Checkpoints are written atomically: to a temporary file in the same folder, flushed, then
renamed over the old one, so a crash never leaves a half-written file in place of a good one.
"""
import dataclasses
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np

from . import backend
from .infer import predict_tiled
from .metrics import evaluate
from .model import UNet, check_input_size, output_size
from .optim import SGD, Adam
from .softmax_cross_entropy import softmax_cross_entropy

CHECKPOINT_FORMAT = 1

# Presets: the paper's network and tiles, and smaller ones for the CPU.
PRESETS = {
    "paper": dict(base_channels=64, depth=4, tile=572, lr=0.001, steps=20000),
    "cpu": dict(base_channels=16, depth=4, tile=380, lr=0.002, steps=3000),
    "tiny": dict(base_channels=8, depth=3, tile=148, lr=0.004, steps=400),
}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; saved as config.json in the run directory."""
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
    weighting: str = "paper"           # "paper" (eq. 2), "balanced" or "none"
    w0: float = 10.0
    sigma: float = 5.0
    elastic: bool = True
    dropout: float = 0.0
    val_every: int = 100
    val_tta: bool = False
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"

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
        check_input_size(self.tile, self.depth, "tile size")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"lr_schedule must be 'constant', 'cosine' or 'step', got "
                             f"{self.lr_schedule!r}")
        return self


def learning_rate(cfg, step):
    """The learning rate for step (0-based): linear warm-up, then the schedule."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.1 if frac >= 2 / 3 else 1.0)
    return cfg.lr


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, not a tinyunet checkpoint, or mismatched."""


def _atomic_write(path, write):
    """Write a file via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _rng_state(rng):
    return rng.bit_generator.state


def save_checkpoint(path, model, optimizer, step, extra):
    """Model parameters, optimizer buffers, step and `extra` (JSON-able), atomically."""
    arrays = {f"param/{k}": backend.to_numpy(v) for k, v in model.params.items()}
    opt = optimizer.state_dict()
    for buf, d in opt.pop("buffers").items():
        arrays.update({f"opt/{buf}/{k}": v for k, v in d.items()})
    meta = dict(format=CHECKPOINT_FORMAT, step=step, model=model.config, optimizer=opt,
                dropout_rng=_rng_state(model.rng) if model.device == "cpu" else None, **extra)
    arrays["meta"] = np.array(json.dumps(meta))
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """(meta, params, optimizer buffers) from a checkpoint; CheckpointError if it is unusable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            params = {k[6:]: z[k] for k in z.files if k.startswith("param/")}
            bufs = {}
            for k in z.files:
                if k.startswith("opt/"):
                    _, buf, name = k.split("/", 2)
                    bufs.setdefault(buf, {})[name] = z[k]
    except Exception as e:                       # zip, JSON, key or value errors
        raise CheckpointError(f"{path} is corrupt or not a tinyunet checkpoint "
                              f"({type(e).__name__}: {e})") from None
    if meta.get("format") != CHECKPOINT_FORMAT or "model" not in meta:
        raise CheckpointError(f"{path} is not a tinyunet checkpoint of format "
                              f"{CHECKPOINT_FORMAT} (found {meta.get('format')!r})")
    return meta, params, bufs


def model_from_checkpoint(path, device="cpu"):
    """(model, meta) rebuilt from a checkpoint's saved configuration."""
    meta, params, _ = load_checkpoint(path)
    model = UNet(**meta["model"])
    try:
        model.load_state_dict(params)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model.to(device), meta


class Trainer:
    """Runs (or resumes) one training run in `run_dir`; see the module docstring."""

    def __init__(self, cfg, train, val, run_dir, resume=False, progress=True, callback=None):
        from .data.samples import TileSampler, loss_weights, normalisation, normalise
        self.cfg, self.run_dir = cfg.check(), Path(run_dir)
        self.progress, self.callback = progress, callback
        train_images, train_labels = train
        self.val_images, self.val_labels = val
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.out = output_size(cfg.tile, cfg.depth)
        self.mean, self.std = normalisation(train_images)
        self.model = UNet(base_channels=cfg.base_channels, depth=cfg.depth, dropout=cfg.dropout,
                          seed=cfg.seed, device=cfg.device)
        self.opt = (SGD(self.model, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
                    if cfg.optimizer == "sgd"
                    else Adam(self.model, cfg.lr, weight_decay=cfg.weight_decay))
        self.rng = np.random.default_rng(cfg.seed)
        self.step, self.best = 0, math.inf
        weights = loss_weights(train_labels, cfg.weighting, cfg.w0, cfg.sigma)
        self.sampler = TileSampler(normalise(train_images, self.mean, self.std), train_labels,
                                   weights, cfg.tile, self.out, elastic=cfg.elastic)
        self.val_x = normalise(self.val_images, self.mean, self.std)
        self.val_w = loss_weights(self.val_labels, "paper", cfg.w0, cfg.sigma)
        if resume:
            self._resume()
        else:
            (self.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            (self.run_dir / "log.jsonl").write_text("")

    # ---- checkpoints --------------------------------------------------------------------------
    def _extra(self):
        return dict(data_rng=_rng_state(self.rng), best=self.best, mean=self.mean, std=self.std,
                    train_config=dataclasses.asdict(self.cfg))

    def save(self, name="latest.npz"):
        save_checkpoint(self.run_dir / name, self.model, self.opt, self.step, self._extra())

    def _resume(self):
        path = self.run_dir / "latest.npz"
        meta, params, bufs = load_checkpoint(path)
        if meta["model"] != self.model.config:
            diff = {k: (meta["model"].get(k), v) for k, v in self.model.config.items()
                    if meta["model"].get(k) != v}
            raise CheckpointError(f"{path} was written by a different model: (checkpoint, now) "
                                  f"= {diff}")
        self.model.load_state_dict(params)
        opt_state = dict(meta["optimizer"], buffers=bufs)
        try:
            self.opt.load_state_dict(opt_state)
        except KeyError as e:
            raise CheckpointError(f"{path}: optimizer state lacks {e} (was it trained with "
                                  f"another optimizer?)") from None
        self.step, self.best = meta["step"], meta["best"]
        self.rng.bit_generator.state = meta["data_rng"]
        if meta.get("dropout_rng") and self.model.device == "cpu":
            self.model.rng.bit_generator.state = meta["dropout_rng"]
        # the log keeps exactly the lines up to the checkpoint's step
        log = self.run_dir / "log.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        kept = [l for l in lines if json.loads(l)["step"] <= self.step]
        _atomic_write(log, lambda f: f.write("".join(l + "\n" for l in kept).encode()))

    # ---- the loop ---------------------------------------------------------------------------
    def log(self, record):
        """Append one record to the run's log.jsonl."""
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def train_step(self):
        """One SGD step on one augmented tile; returns the loss."""
        # weighting "none" samples weights of 1: the plain cross-entropy
        x, y, w = (backend.to_device(a, self.model.device) for a in self.sampler.sample(self.rng))
        loss, dlogits = softmax_cross_entropy(self.model.forward(x, train=True), y, w)
        self.model.backward(dlogits)
        self.opt.lr = learning_rate(self.cfg, self.step)
        self.opt.step()
        return loss

    def predict(self, images, tta=False):
        """Cell probability maps (N, H, W) for normalised images."""
        return np.stack([predict_tiled(self.model, im, tile=self.cfg.tile, tta=tta)[1]
                         for im in images])

    def validate(self, tta=None, topology=False):
        """The ISBI metrics of the validation slices (tta: None = cfg.val_tta). topology=True
        adds the warping error, V_rand and V_info: off by default, as they add 0.36 s a
        512x512 slice, 5-6 % of a validation on the CPU preset (6-9 s of prediction a slice),
        and far more on a GPU, where prediction is fast."""
        probs = self.predict(self.val_x, tta=self.cfg.val_tta if tta is None else tta)
        res = evaluate(probs, self.val_labels == 255, topology=topology)
        self._plot_predictions(probs[0])
        return {k: v for k, v in res.items() if isinstance(v, float)}


    def run(self):
        """Train to cfg.steps; returns the final validation metrics. Ctrl-C saves and stops."""
        from tqdm import tqdm
        cfg = self.cfg
        interrupted = False
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress,
                   desc="training", unit="step", dynamic_ncols=True)
        losses, t0 = [], time.perf_counter()
        try:
            while self.step < cfg.steps:
                loss = self.train_step()
                self.step += 1
                losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.opt.lr:.2e}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log(dict(step=self.step, loss=float(np.mean(losses)), lr=self.opt.lr,
                                   seconds=round(time.perf_counter() - t0, 3)))
                    losses = []
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    val = self.validate()
                    self.log(dict(step=self.step, val=val))
                    bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}"
                                                                for k, v in val.items()))
                    if val["rand_error"] < self.best:
                        self.best = val["rand_error"]
                        self.save("best.npz")
                    self.save()
                    self._plot_curves()
                if self.callback is not None:
                    self.callback(self)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        # also on Ctrl-C: the latest state goes to disk before we stop (a second Ctrl-C
        # during this write is ignored, so it cannot be cut in half)
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.save()
        finally:
            signal.signal(signal.SIGINT, old)
        if interrupted:
            raise KeyboardInterrupt(f"stopped at step {self.step}; checkpoint saved in "
                                    f"{self.run_dir / 'latest.npz'} (resume with --resume)")
        return self.read_log()[-1].get("val")

    # ---- log and figures --------------------------------------------------------------------
    def read_log(self):
        return [json.loads(l) for l in (self.run_dir / "log.jsonl").read_text().splitlines()]

    def _plot_curves(self):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        log = self.read_log()
        tr = [r for r in log if "loss" in r]
        va = [r for r in log if "val" in r]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        ax[0].plot([r["step"] for r in tr], [r["loss"] for r in tr])
        ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
        for key in ("pixel_error", "rand_error"):
            ax[1].plot([r["step"] for r in va], [r["val"][key] for r in va], "o-", label=key)
        ax[1].set(xlabel="step", ylabel="error", title="validation", yscale="log")
        ax[1].legend()
        fig.tight_layout()
        fig.savefig(self.run_dir / "curves.png", dpi=80)
        plt.close(fig)

    def _plot_predictions(self, prob):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        panels = [(self.val_images[0], "image", "gray"), (self.val_labels[0], "ground truth", "gray"),
                  (prob, "P(cell)", "viridis"), (self.val_w[0], "weight map", "magma")]
        fig, ax = plt.subplots(1, 4, figsize=(14, 3.8))
        for a, (img, title, cmap) in zip(ax, panels):
            a.imshow(img, cmap=cmap)
            a.set_title(title)
            a.axis("off")
        fig.suptitle(f"validation slice 0, step {self.step}")
        fig.tight_layout()
        fig.savefig(self.run_dir / "predictions.png", dpi=70)
        plt.close(fig)
