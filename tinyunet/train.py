"""Training a U-Net the paper's way: SGD with momentum 0.99, one large tile per step, the weighted
loss, elastic deformation; validation with the ISBI metrics; checkpoints that resume exactly.
(The "cpu" preset uses Adam instead: docs/13-laptop.md measures why.)

A run lives in a folder (the run directory):
    config.json         the run's settings (the model is rebuilt from it on --resume)
    log.jsonl           one JSON object per logged step and per validation
    latest.npz          the latest checkpoint (model, optimizer, step, random states)
    best.npz            the best checkpoint by validation Rand error
    curves.png          training loss and validation metrics, the best step marked
    predictions.png     a validation slice at the best checkpoint: image, ground truth,
                        probability map, weight map

Checkpoints are written atomically: to a temporary file in the same folder, flushed, then
renamed over the old one, so a crash never leaves a half-written file in place of a good one.

A checkpoint holds everything the next steps depend on: model, optimizer, step, both random
states, the losses of the unfinished log window, whether the step's validation is still due, and
the number of log lines written so far. So a run stopped anywhere (Ctrl-C, see Trainer.run) and
resumed from any checkpoint ends with the numbers of an uninterrupted run.
"""
import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
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
    # the laptop study's winner (docs/13-laptop.md): Adam; 18000 steps fit two hours on 2 cores
    "cpu": dict(base_channels=16, depth=4, tile=380, optimizer="adam", lr=0.0005, steps=18000,
                val_every=500),
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
    data: dict = None                  # where the data came from: the script's record, unread here

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
                ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                ("weight_decay", self.weight_decay >= 0, ">= 0"),
                ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                ("seed", self.seed >= 0, ">= 0"), ("w0", self.w0 >= 0, ">= 0"),
                ("sigma", self.sigma > 0, "> 0"),
                ("weighting", self.weighting in ("paper", "balanced", "none"),
                 "'paper', 'balanced' or 'none'")]:
            if not ok:
                raise ValueError(f"{name} must be {valid}, got {getattr(self, name)!r}")
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


@contextlib.contextmanager
def _sigint_calls(handler):
    """Call handler(signum, frame) on SIGINT (Ctrl-C) inside the block, instead of raising
    KeyboardInterrupt wherever the program happens to be."""
    if threading.current_thread() is not threading.main_thread():
        yield                                         # only the main thread receives signals
        return
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


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
    meta = checkpoint_meta(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            params = {k[6:]: z[k] for k in z.files if k.startswith("param/")}
            bufs = {}
            for k in z.files:
                if k.startswith("opt/"):
                    _, buf, name = k.split("/", 2)
                    bufs.setdefault(buf, {})[name] = z[k]
    except Exception as e:                       # zip or value errors in the arrays
        raise CheckpointError(f"{path} is corrupt: {_why_unreadable(path, e)}") from None
    return meta, params, bufs


def checkpoint_meta(path):
    """A checkpoint's JSON header (format, step, model, settings) without loading its arrays."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint (.npz) file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise CheckpointError(f"{path} is not a tinyunet checkpoint: it has no 'meta' "
                                      f"entry (its arrays: {', '.join(z.files[:5]) or 'none'})")
            header = str(z["meta"])
    except CheckpointError:
        raise
    except Exception as e:                       # not a zip, damaged, pickled objects
        raise CheckpointError(f"{path} is corrupt or not a tinyunet checkpoint: "
                              f"{_why_unreadable(path, e)}") from None
    try:
        meta = json.loads(header)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or "model" not in meta:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not a tinyunet checkpoint of format "
                              f"{CHECKPOINT_FORMAT} (found format {found!r})")
    return meta


def _why_unreadable(path, e):
    """NumPy's error said for a user, without its advice to load pickles (allow_pickle), which
    would run code from an untrusted file."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK":                                   # every .npz is a zip archive
        return "it is not an .npz file (a zip archive of arrays)"
    if "pickle" in str(e) or "Object arrays" in str(e):
        return "it holds Python objects, where a checkpoint holds only arrays and a JSON header"
    return f"a damaged or incomplete archive ({type(e).__name__}: {e})"


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
    """Runs (or resumes) one training run in `run_dir`; see the module docstring.

    A new run validates at step 0 (before training), every `val_every` steps and at the last
    step; step 0 is logged but is not a candidate for best.npz.
    """

    def __init__(self, cfg, train, val, run_dir, resume=False, progress=True, callback=None):
        from .data.samples import TileSampler, loss_weights, normalisation, normalise
        self.cfg, self.run_dir = cfg.check(), Path(run_dir)
        self.progress, self.callback = progress, callback
        train_images, train_labels = train
        self.val_images, self.val_labels = val
        self.out = output_size(cfg.tile, cfg.depth)
        self.mean, self.std = normalisation(train_images)
        self.model = UNet(base_channels=cfg.base_channels, depth=cfg.depth, dropout=cfg.dropout,
                          seed=cfg.seed, device=cfg.device)
        self.opt = (SGD(self.model, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
                    if cfg.optimizer == "sgd"
                    else Adam(self.model, cfg.lr, weight_decay=cfg.weight_decay))
        self.rng = np.random.default_rng(cfg.seed)
        self.step, self.best = 0, math.inf
        self.losses = []              # training losses since the last logged one
        self.val_pending = True       # the validation due at this step is not done yet
        self.log_lines = 0            # lines in log.jsonl
        weights = loss_weights(train_labels, cfg.weighting, cfg.w0, cfg.sigma)
        self.sampler = TileSampler(normalise(train_images, self.mean, self.std), train_labels,
                                   weights, cfg.tile, self.out, elastic=cfg.elastic)
        self.val_x = normalise(self.val_images, self.mean, self.std)
        self.val_w = loss_weights(self.val_labels, "paper", cfg.w0, cfg.sigma)
        if resume:
            self._resume()
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            (self.run_dir / "log.jsonl").write_text("")
            self.save()               # a run stopped before its first validation resumes, too

    # ---- checkpoints --------------------------------------------------------------------------
    def _extra(self):
        return dict(data_rng=_rng_state(self.rng), best=self.best, mean=self.mean, std=self.std,
                    losses=self.losses, val_pending=self.val_pending, log_lines=self.log_lines,
                    train_config=dataclasses.asdict(self.cfg))

    def save(self, name="latest.npz"):
        save_checkpoint(self.run_dir / name, self.model, self.opt, self.step, self._extra())
        if name == "latest.npz":
            self._saved_step = self.step

    def _resume(self):
        path = self.run_dir / "latest.npz"
        meta, params, bufs = load_checkpoint(path)
        if meta["model"] != self.model.config:
            diff = {k: (meta["model"].get(k), v) for k, v in self.model.config.items()
                    if meta["model"].get(k) != v}
            raise CheckpointError(f"{path} was written by a different model: (checkpoint, now) "
                                  f"= {diff}")
        # the normalisation is computed from the training images: other numbers, other data
        if not np.allclose([meta["mean"], meta["std"]], [self.mean, self.std], rtol=1e-9, atol=0):
            raise CheckpointError(f"{path} was trained on other data: grey-value mean/std "
                                  f"{meta['mean']:.6f}/{meta['std']:.6f} then, "
                                  f"{self.mean:.6f}/{self.std:.6f} now")
        self.model.load_state_dict(params)
        opt_state = dict(meta["optimizer"], buffers=bufs)
        try:
            self.opt.load_state_dict(opt_state)
        except KeyError as e:
            raise CheckpointError(f"{path}: optimizer state lacks {e} (was it trained with "
                                  f"another optimizer?)") from None
        self.step, self.best = meta["step"], meta["best"]
        self._saved_step = self.step
        self.rng.bit_generator.state = meta["data_rng"]
        if meta.get("dropout_rng") and self.model.device == "cpu":
            self.model.rng.bit_generator.state = meta["dropout_rng"]
        self.losses = list(meta.get("losses", []))
        self.val_pending = meta.get("val_pending", False)
        # the log goes back to exactly the lines it had when the checkpoint was written
        log = self.run_dir / "log.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        if "log_lines" in meta:
            kept = lines[:meta["log_lines"]]
        else:                                         # a checkpoint from before log_lines
            kept = [l for l in lines if json.loads(l)["step"] <= self.step]
        self.log_lines = len(kept)
        _atomic_write(log, lambda f: f.write("".join(l + "\n" for l in kept).encode()))

    # ---- the loop ---------------------------------------------------------------------------
    def log(self, record):
        """Append one record to the run's log.jsonl."""
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.log_lines += 1

    def train_step(self):
        """One optimiser step on one augmented tile; returns the loss."""
        # weighting "none" samples weights of 1: the plain cross-entropy
        x, y, w = (backend.to_device(a, self.model.device) for a in self.sampler.sample(self.rng))
        loss, dlogits = softmax_cross_entropy(self.model.forward(x, train=True), y, w)
        self.model.backward(dlogits, input_grad=False)   # the image needs no gradient
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
        self.val_probs = probs                # kept for predictions.png if this is the best
        return {k: v for k, v in res.items() if isinstance(v, float)}

    def run(self):
        """Train to cfg.steps; returns the last validation's metrics.

        Ctrl-C (SIGINT) stops the run cleanly wherever it comes, then raises KeyboardInterrupt:
        a training step or a checkpoint write in progress is finished first (a step changes the
        model, the optimizer and both random states, and only a whole step can be saved); a
        validation in progress is abandoned and done again on resume. The run's state is saved
        to latest.npz. A second Ctrl-C stops at once, without saving: the run then resumes from
        its last checkpoint. Either way, a resumed run ends with exactly the numbers of an
        uninterrupted one on the CPU.
        """
        from tqdm import tqdm
        self._stop, self._at_once, self._phase = False, False, "idle"
        self._bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                         desc="training", unit="step", dynamic_ncols=True)
        self._t0 = time.perf_counter()
        whole = True                                  # is the state in memory a whole step's?
        with _sigint_calls(self._on_sigint):
            try:
                while True:
                    if self.val_pending and not self._stop:
                        self._validate_and_save()
                    if self._stop or self.step >= self.cfg.steps:
                        break
                    self._phase = "step"
                    self._train_and_log()
                    self._phase = "idle"
                    if self.callback is not None:
                        self.callback(self)
            except KeyboardInterrupt:                 # see _on_sigint, or from the callback
                self._stop = True
                whole = self._phase in ("idle", "validate") and not self._at_once
            finally:
                self._bar.close()
            if self._stop and whole:
                try:
                    self._phase = "save"
                    self.save()
                except KeyboardInterrupt:             # a second Ctrl-C: the old file stays
                    whole = False
        if self._stop:
            where = self.run_dir / "latest.npz"
            if whole:
                due = " (its validation is done on resume)" if self.val_pending else ""
                msg = f"stopped at step {self.step}{due}; checkpoint saved in {where}"
            else:
                msg = (f"stopped at once at step {self.step}; the last checkpoint, of step "
                       f"{self._saved_step}, is in {where}")
            raise KeyboardInterrupt(msg)
        return next(r["val"] for r in reversed(self.read_log()) if "val" in r)

    def _on_sigint(self, signum, frame):
        if self._stop:                                # a second Ctrl-C: stop now
            self._at_once = True
            raise KeyboardInterrupt
        self._stop = True
        if self._phase == "validate":                 # nothing to finish: it is redone
            raise KeyboardInterrupt
        self._bar.write("Ctrl-C: stopping after this step and saving it (Ctrl-C again to stop "
                        "at once)")

    def _train_and_log(self):
        cfg = self.cfg
        loss = self.train_step()
        self.step += 1
        self.losses.append(float(loss))
        self.val_pending = self.step % cfg.val_every == 0 or self.step == cfg.steps
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.opt.lr:.2e}")
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            self.log(dict(step=self.step, loss=float(np.mean(self.losses)), lr=self.opt.lr,
                          seconds=round(time.perf_counter() - self._t0, 3)))
            self.losses = []

    def _validate_and_save(self):
        self._phase = "validate"
        val = self.validate()
        self._phase = "commit"                        # from here on, Ctrl-C waits for the end
        self.log(dict(step=self.step, val=val))
        self.val_pending = False
        if self.step > 0 and val["rand_error"] < self.best:
            self.best = val["rand_error"]
            self.save("best.npz")
            self._plot_predictions(self.val_probs[0])
        self.save()
        self._plot_curves()
        name = f"step {self.step}" if self.step else "before training"
        self._bar.write(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        self._phase = "idle"

    # ---- log and figures --------------------------------------------------------------------
    def read_log(self):
        return [json.loads(l) for l in (self.run_dir / "log.jsonl").read_text().splitlines()]

    def _plot_curves(self):
        from .plots import best_step, plot_curves
        log = self.read_log()
        plot_curves(log, self.run_dir / "curves.png", best_step=best_step(log))

    def _plot_predictions(self, prob):
        """predictions.png, drawn when a validation gives a new best checkpoint."""
        from .plots import plot_predictions
        plot_predictions(self.val_images[0], self.val_labels[0], prob, self.val_w[0],
                         self.run_dir / "predictions.png",
                         f"validation slice 0 at the best checkpoint: step {self.step}, "
                         f"Rand error {self.best:.4f}")
