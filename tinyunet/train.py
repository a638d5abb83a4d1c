"""Training a U-Net the paper's way: SGD with momentum 0.99, one large tile per step, the weighted
loss, elastic deformation; validation with the ISBI metrics; runs that resume exactly.
(The "cpu" preset uses Adam instead: studies/laptop/ measures why.) The settings are
config.TrainConfig; the checkpoint format is checkpoint.py.

A run lives in a folder (the run directory, rundir.new_run_dir; its lock, signals and the
message a failed write gives are rundir.py's):
    config.json         the run's settings (the model is rebuilt from it on resume)
    log.jsonl           one JSON object per logged step and per validation
    latest.npz          the latest checkpoint (model, optimizer, step, random states)
    best.npz            the best checkpoint: lowest validation Rand error (membranes) or
                        highest SEG (cells)
    final_metrics.json  the scores of the best and of the last checkpoint, plain and with TTA
                        (`final_report`)
    curves.png          training loss and validation metrics, the best step marked
    predictions.png     a validation slice at the best checkpoint: image, ground truth,
                        probability map, weight map

A checkpoint holds everything the next steps depend on: model, optimizer, step, both random
states, the losses of the unfinished log window, whether the step's validation is still due, and
the number of log lines written so far. So a run stopped anywhere (Ctrl-C, see Trainer.run) and
resumed from any checkpoint ends with the numbers of an uninterrupted run.

With `ema` (a decay, e.g. 0.999) the run keeps a moving average of the parameters (optim.EMA):
it is what the run validates, what best.npz is chosen by and what the checkpoints ship as the
model (checkpoint.model_from_checkpoint), while the optimizer steps the raw parameters; the
average changes nothing of the training itself. `val_plain` validates the raw parameters too
(log.jsonl: "val_plain"), to compare the two.
"""
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import backend
from .checkpoint import (CheckpointError, load_checkpoint, model_file, model_from_checkpoint,
                         rng_state, save_checkpoint)
from .config import BEST, best_score, best_step, learning_rate
from .data.images import labels_to_classes, normalisation, normalise
from .data.samples import TileSampler
from .data.targets import targets
from .files import atomic_write, write_file
from .infer import predict_tiled
from .instances import label_cells
from .metrics import evaluate, seg
from .model import UNet, output_size
from .ops.softmax_cross_entropy import softmax_cross_entropy
from .optim import EMA, SGD, Adam
from .rundir import STOP_SIGNALS, RunLock, Stopped, kept, stop_signals


def format_scores(scores):
    """'seg 0.8123, f1 0.9000, reference 13': scores to 4 decimals, counts as they are."""
    return ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}"
                     for k, v in scores.items())


class Trainer:
    """Runs (or resumes) one training run in `run_dir`; see the module docstring.

    A new run validates at step 0 (before training), every `val_every` steps and at the last
    step; step 0 is logged but is not a candidate for best.npz.

    progress=True shows a progress bar on a terminal; where the output goes to a file (nohup,
    a scheduler's log) it writes a plain line every `line_seconds` instead, so that the log stays
    small and the validation lines stand out.
    """
    line_seconds = 60.0

    def __init__(self, cfg, train, val, run_dir, resume=False, progress=True, callback=None):
        # the device the run trains on, as config.json records it
        cfg = dataclasses.replace(cfg.check(), device=backend.resolve_device(cfg.device))
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.progress, self.callback = progress, callback
        train_images, train_labels = train
        self.val_images, self.val_labels = val
        self.out = output_size(cfg.tile, cfg.depth)
        self.mean, self.std = normalisation(train_images)
        self.image_dtype = str(np.asarray(train_images).dtype)   # what predict.py will expect
        self.model = UNet(base_channels=cfg.base_channels, depth=cfg.depth, dropout=cfg.dropout,
                          seed=cfg.seed, device=cfg.device)
        if cfg.init and not resume:               # before the average, which copies them
            self._start_from(cfg.init)
        self.opt = (SGD(self.model, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
                    if cfg.optimizer == "sgd"
                    else Adam(self.model, cfg.lr, weight_decay=cfg.weight_decay))
        self.ema = EMA(self.model, cfg.ema) if cfg.ema else None
        self.rng = np.random.default_rng(cfg.seed)
        # best.npz: the lowest validation Rand error (membranes) or the highest SEG (instances)
        self.best_key, self.best_sign = BEST[cfg.labels]
        self.step, self.best = 0, math.inf     # the lowest config.best_score so far
        self.losses = []              # training losses since the last logged one
        self.seconds = 0.0            # of training before this process (a resumed run's)
        self._sample = self._rng_before = None    # the next step's tile, drawn ahead
        self.val_pending = True       # the validation due at this step is not done yet
        self.log_lines = 0            # lines in log.jsonl
        self._saved_step = 0          # the step of the latest.npz on disk
        self.val_probs = None         # the last validation's probability maps
        # while run() runs: a signal asked to stop (_stop; _at_once: a second one), which signal,
        # what the loop is doing (_phase: idle, step, validate, commit, save), the progress bar
        # or plain lines (_bar, _lines, _last_line) and when this process's training began (_t0)
        self._stop = self._at_once = False
        self._signal, self._phase = None, "idle"
        self._bar, self._lines, self._t0, self._last_line = None, False, None, 0.0
        kind = dict(kind=cfg.labels, w0=cfg.w0, sigma=cfg.sigma, border=cfg.border)
        classes, weights = targets(train_labels, weighting=cfg.weighting, **kind)
        self.sampler = TileSampler(normalise(train_images, self.mean, self.std), classes,
                                   weights, cfg.tile, self.out, elastic=cfg.elastic,
                                   augment=cfg.augment)
        self.val_x = normalise(self.val_images, self.mean, self.std)
        self.val_w = targets(self.val_labels, weighting="paper", **kind)[1]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.run_dir)            # before anything of the run is read or written
        try:
            if resume:
                self._resume()
            else:
                self._write(self.run_dir / "log.jsonl", b"")
                self.save()           # a run stopped before its first validation resumes, too
            # the settings as this process runs them: a resumed run's new --steps, --val-every,
            # --device are its settings from now on
            self._write(self.run_dir / "config.json",
                        json.dumps(dataclasses.asdict(cfg), indent=1).encode())
        except BaseException:
            self.lock.close()
            raise

    # ---- checkpoints --------------------------------------------------------------------------
    def _extra(self):
        data_rng = self._rng_before if self._sample is not None else rng_state(self.rng)
        return dict(data_rng=data_rng, best=self.best, mean=self.mean, std=self.std,
                    image_dtype=self.image_dtype,
                    losses=[float(loss) for loss in self.losses], val_pending=self.val_pending,
                    log_lines=self.log_lines, train_config=dataclasses.asdict(self.cfg),
                    seconds=self._elapsed())

    def save(self, name="latest.npz"):
        """Write a checkpoint (atomically); a failed write (a full disk) is a CheckpointError
        that says what could not be written and that the file before it is intact."""
        path = self.run_dir / name
        try:
            save_checkpoint(path, self.model, self.opt, self.step, self._extra(), self.ema)
        except OSError as e:
            raise CheckpointError(f"could not write {path} ({e.strerror or e}): "
                                  f"{kept(path)}") from None
        if name == "latest.npz":
            self._saved_step = self.step

    def _start_from(self, init):
        """Fine-tuning: a trained model's weights (its moving average, where its run kept one)
        as this new run's first weights, in place of the random initialisation; the optimizer,
        the schedule and the average start afresh, and the grey values are normalised by this
        run's own training images."""
        model, _ = model_from_checkpoint(model_file(init), self.cfg.device)
        diff = [f"{k} {model.config[k]} (this run: {self.model.config[k]})"
                for k in ("in_channels", "n_classes", "base_channels", "depth")
                if model.config[k] != self.model.config[k]]
        if diff:
            raise CheckpointError(f"init {init}: the model has {', '.join(diff)}; a run that "
                                  f"starts from a model takes its channels, classes, "
                                  f"base_channels and depth")
        self.model.load_state_dict(model.state_dict())

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
        # the moving average is part of the run (like the optimizer): kept as it was begun
        decay, now = (meta.get("ema") or {}).get("decay") or 0.0, self.cfg.ema or 0.0
        if decay != now:
            raise CheckpointError(f"{path} was trained with ema = {decay}, not {now} (0: off): "
                                  f"the moving average is fixed once a run has started; resume "
                                  f"with ema = {decay}, or start a new run to change it")
        self.model.load_state_dict(params)
        opt_state = dict(meta["optimizer"], buffers=bufs)
        try:
            self.opt.load_state_dict(opt_state)
        except KeyError as e:
            raise CheckpointError(f"{path}: optimizer state lacks {e} (was it trained with "
                                  f"another optimizer?)") from None
        if self.ema is not None:
            _, average, _ = load_checkpoint(path, average=True)
            self.ema.load_state_dict(dict(meta["ema"], average=average))
        self.step, self.best = meta["step"], meta["best"]
        self._saved_step = self.step
        self.rng.bit_generator.state = meta["data_rng"]
        self.model.rng.state = meta["dropout_rng"]
        self.losses = list(meta["losses"])
        self.seconds = meta.get("seconds", 0.0)      # (checkpoints of runs begun before: 0)
        self.val_pending = meta["val_pending"]
        # the log goes back to exactly the lines it had when the checkpoint was written
        log = self.run_dir / "log.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        kept = lines[:meta["log_lines"]]
        self.log_lines = len(kept)
        atomic_write(log, lambda f: f.write("".join(line + "\n" for line in kept).encode()))

    # ---- the loop ---------------------------------------------------------------------------
    def log(self, record):
        """Append one record to the run's log.jsonl (a failed write: a CheckpointError; the
        last checkpoint is intact and resumes the log from its own count of lines)."""
        path = self.run_dir / "log.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise CheckpointError(f"could not write {path} ({e.strerror or e}): "
                                  f"{kept(self.run_dir / 'latest.npz')}") from None
        self.log_lines += 1

    def train_step(self):
        """One optimiser step on one augmented tile; returns the loss, a 0-d array on the
        model's device (float(loss) reads it back).

        On a GPU every op of the step is queued without the host waiting for the device: the
        labels were checked when they were loaded, and the next step's tile is drawn on the
        host while the device works through this step's queue."""
        # weighting "none" samples weights of 1: the plain cross-entropy
        x, y, w = (backend.to_device(a, self.model.device) for a in self._take_sample())
        loss, dlogits = softmax_cross_entropy(self.model.forward(x, train=True), y, w,
                                              check_labels=False)
        self.model.backward(dlogits, input_grad=False)   # the image needs no gradient
        self.opt.lr = learning_rate(self.cfg, self.step)
        self.opt.step()
        if self.ema is not None:
            self.ema.update()
        if self.step + 1 < self.cfg.steps:
            self._draw_sample()
        return loss

    def _draw_sample(self):
        """Draw the next tile now, keeping the data random state from before the draw: that
        is the state a checkpoint saves, so a resumed run draws the same tile again."""
        self._rng_before = rng_state(self.rng)
        self._sample = self.sampler.sample(self.rng)

    def _take_sample(self):
        if self._sample is None:
            self._draw_sample()
        sample, self._sample, self._rng_before = self._sample, None, None
        return sample

    def predict(self, images, tta=False, model=None):
        """Cell probability maps (N, H, W) of `model` (default: the run's) for normalised
        images."""
        model = model or self.model
        return np.stack([predict_tiled(model, im, tile=self.cfg.tile, tta=tta, channel=1)
                         for im in images])

    def validate(self, tta=None, topology=False, plain=False, model=None):
        """The ISBI metrics of the validation slices (tta: None = cfg.val_tta): of the run's
        model, its moving average if it keeps one (plain=True: the raw parameters), or of
        `model`. topology=True adds the warping error, V_rand and V_info: off during training,
        where they would slow every validation (final_report adds them)."""
        tta = self.cfg.val_tta if tta is None else tta
        if model is None and self.ema is not None and not plain:
            with self.ema.applied() as averaged:
                probs = self.predict(self.val_x, tta, averaged)
        else:
            probs = self.predict(self.val_x, tta, model)
        self.val_probs = probs                # kept for predictions.png if this is the best
        if self.cfg.labels == "instances":    # SEG of the cells found (topology: no meaning)
            cells = [label_cells(p, self.cfg.threshold, self.cfg.border, self.cfg.min_cell)
                     for p in probs]
            res = seg(np.stack(cells), self.val_labels)
        else:
            res = evaluate(probs, labels_to_classes(self.val_labels), topology=topology)
        return {k: (v if isinstance(v, int) else float(v)) for k, v in res.items()
                if isinstance(v, (float, int)) and not isinstance(v, bool)}

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
        bar = self.progress and sys.stderr.isatty()
        self._lines = self.progress and not bar       # plain progress lines into a file
        self._bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not bar,
                         desc="training", unit="step", dynamic_ncols=True)
        self._t0 = self._last_line = time.perf_counter()
        whole = True                                  # is the state in memory a whole step's?
        self._signal = None
        try:
            with stop_signals(self._on_sigint):
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
        finally:
            self.lock.close()                         # the training's writes are done
            self.seconds, self._t0 = self._elapsed(), None
        if self._stop:
            where = self.run_dir / "latest.npz"
            if whole:
                due = " (its validation is done on resume)" if self.val_pending else ""
                msg = f"stopped at step {self.step}{due}; checkpoint saved in {where}"
            else:
                msg = (f"stopped at once at step {self.step}; the last checkpoint, of step "
                       f"{self._saved_step}, is in {where}")
            raise Stopped(msg, self._signal)
        last = next((r["val"] for r in reversed(self.read_log()) if "val" in r), None)
        return last if last is not None else self.validate()     # a log emptied by hand

    def _elapsed(self, now=None):
        """Seconds of training of the run, over every process that trained it."""
        if getattr(self, "_t0", None) is None:
            return self.seconds
        return self.seconds + (now or time.perf_counter()) - self._t0

    def _on_sigint(self, signum, frame):
        """Ctrl-C, SIGTERM or SIGHUP: the first finishes the step in progress and saves, a
        second stops at once."""
        if self._stop:                                # a second signal: stop now
            self._at_once = True
            raise KeyboardInterrupt
        self._stop, self._signal = True, signum
        if self._phase == "validate":                 # nothing to finish: it is redone
            raise KeyboardInterrupt
        name = STOP_SIGNALS.get(signum, f"signal {signum}")
        try:                                  # after SIGHUP the terminal may be gone
            self._bar.write(f"{name}: stopping after this step and saving it ({name} again to "
                            f"stop at once)")
        except OSError:
            pass

    def _train_and_log(self):
        """One step; every log_every steps the losses are read back (the only time a step on
        a GPU waits for the device) and logged."""
        cfg = self.cfg
        self.losses.append(self.train_step())          # a 0-d array on the model's device
        self.step += 1
        self.val_pending = self.step % cfg.val_every == 0 or self.step == cfg.steps
        self._bar.update(1)
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            losses = [float(loss) for loss in self.losses]
            now = time.perf_counter()
            self.log(dict(step=self.step, loss=float(np.mean(losses)), lr=self.opt.lr,
                          seconds=round(self._elapsed(now), 3)))
            self.losses = []
            self._bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{self.opt.lr:.2e}")
            if self._lines and (now - self._last_line >= self.line_seconds or
                                self.step == cfg.steps):
                self._last_line = now
                print(f"step {self.step}/{cfg.steps}: loss {losses[-1]:.4f}, lr "
                      f"{self.opt.lr:.2e}, {self._elapsed(now) / 60:.1f} min", file=sys.stderr,
                      flush=True)

    def _validate_and_save(self):
        self._phase = "validate"
        record = dict(step=self.step)
        if self.ema is not None and self.cfg.val_plain:
            record["val_plain"] = self.validate(plain=True)
        val = record["val"] = self.validate()
        self._phase = "commit"                        # from here on, Ctrl-C waits for the end
        self.log(record)
        self.val_pending = False
        score = best_score(val, self.cfg.labels)
        if self.step > 0 and score < self.best:
            self.best = score
            self.save("best.npz")
            self._plot_predictions(self.val_probs[0])
        self.save()
        self._plot_curves()
        name = f"step {self.step}" if self.step else "before training"
        self._bar.write(f"{name}: {format_scores(val)}" + (
            f"; raw parameters: {format_scores(record['val_plain'])}"
            if "val_plain" in record else ""))
        self._phase = "idle"

    # ---- log and figures --------------------------------------------------------------------
    def read_log(self):
        return [json.loads(line) for line in (self.run_dir / "log.jsonl").read_text().splitlines()]

    def _write(self, path, data):
        """Write a file of the run atomically; a failure says that the last checkpoint stands.
        data: bytes, or writer(f) that writes to the open file."""
        writer = data if callable(data) else (lambda f: f.write(data))
        write_file(path, writer, kept(self.run_dir / "latest.npz"))

    def _plot_curves(self):
        from .plots import plot_curves
        log = self.read_log()
        self._write(self.run_dir / "curves.png",
                    lambda f: plot_curves(log, f, best_step=best_step(log, self.cfg.labels)))

    def _plot_predictions(self, prob):
        """predictions.png, drawn when a validation gives a new best checkpoint."""
        from .plots import plot_predictions
        self._write(self.run_dir / "predictions.png", lambda f: plot_predictions(
            self.val_images[0], self.val_labels[0], prob, self.val_w[0], f,
            f"validation slice 0 at the best checkpoint: step {self.step}, "
            f"{self.best_key} {self.best_sign * self.best:.4f}"))


def final_report(trainer, device):
    """Score the run's best checkpoint (chosen on the validation slices, so its scores there
    are optimistic) and its last (latest.npz: no choice made on them) on the validation slices,
    plain and with 8-fold TTA, with the topological scores too; each checkpoint's model is its
    moving average where the run keeps one. Writes final_metrics.json: the best checkpoint's
    step and scores at the top level, the last one's under "last"; returns it."""
    scores = {}
    for name in ("best", "latest"):
        path = trainer.run_dir / f"{name}.npz"
        if not path.exists():                # no validation after step 0 improved on nothing
            path = trainer.run_dir / "latest.npz"
        model, meta = model_from_checkpoint(path, device)
        scores[name] = {"step": meta["step"],
                        "plain": trainer.validate(tta=False, topology=True, model=model),
                        "tta": trainer.validate(tta=True, topology=True, model=model)}
    data = trainer.cfg.data or {}
    final = dict(scores["best"], data=data.get("source"), last=scores["latest"])
    trainer._write(trainer.run_dir / "final_metrics.json", json.dumps(final, indent=1).encode())
    return final
