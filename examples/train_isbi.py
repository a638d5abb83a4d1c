"""Train a U-Net on ISBI 2012 (or the built-in synthetic EM set) and report the challenge's metrics.

    python examples/train_isbi.py                                   # synthetic data, tiny preset
    python examples/train_isbi.py --data isbi --preset cpu          # $TINYUNET_ISBI_DIR
    python examples/train_isbi.py --data ../shared/data/isbi2012 --preset paper --device gpu
    python examples/train_isbi.py --data my_pairs --train-slices 0-7 --val-slices 8,9
    python examples/train_isbi.py --resume runs/20261121-180000-cpu     # continue a run

With no arguments it trains a small network on a synthetic EM-like data set for about half a
minute on the CPU and shows the validation metrics before and after. --data takes a folder with
the ISBI files (train-volume.tif, train-labels.tif) or with *image* / *label* pairs (PNG, TIFF or
JPEG); `--data isbi` is the folder $TINYUNET_ISBI_DIR (default ../shared/data/isbi2012 beside
the checkout). The last sixth of the slices (at least one) validates, the others train (ISBI:
0-24 and 25-29), unless --train-slices / --val-slices say otherwise.

Each run writes a run directory (checkpoints, log, figures; see tinyunet/train.py) whose
config.json records the data. Ctrl-C saves the run; --resume continues it on the same data
and ends with the numbers an uninterrupted run would have. A mistake in the arguments or the
data prints one line `error: ...` and exits with status 2 (--debug shows the traceback).
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout, too

from tinyunet import backend                                     # noqa: E402
from tinyunet.cli import ArgumentParser, UserError, announce_compiling, run_cli  # noqa: E402
from tinyunet.data import (DataError, default_isbi_dir, load_isbi, load_pairs,  # noqa: E402
                           synthetic_em)
from tinyunet.train import (PRESETS, CheckpointError, TrainConfig, Trainer,  # noqa: E402
                            checkpoint_meta, model_from_checkpoint)

SYNTHETIC = dict(n=12, size=256)             # the built-in set: 12 slices of 256 x 256


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    saved = read_run(args.resume) if args.resume else None
    data, (train, val), name = choose_data(args, saved)
    cfg = make_config(args, saved, device, data)
    if saved:
        run_dir = Path(args.resume)
        at = checkpoint_step(run_dir)
        if cfg.steps < at:
            raise UserError(f"--steps {cfg.steps}: the run in {run_dir} is already at step {at}; "
                            f"give --steps {at} or more")
    else:
        run_dir = new_run_dir(args.out, cfg.preset)
    # every argument is checked: from here on, things are written
    print(f"data: {name}: {len(train[0])} training and {len(val[0])} validation slices "
          f"of {train[0].shape[1]}x{train[0].shape[2]} (slices {data['train_slices']} and "
          f"{data['val_slices']})")
    print(f"run directory: {run_dir}")
    announce_compiling()
    try:
        try:
            trainer = Trainer(cfg, train, val, run_dir, resume=bool(saved))
        except CheckpointError as e:
            raise UserError(str(e)) from None
        print(f"model: base {cfg.base_channels}, depth {cfg.depth}, "
              f"{trainer.model.num_parameters():,} parameters, tile {cfg.tile} -> {trainer.out}, "
              f"{cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps, weighting {cfg.weighting}, "
              f"{device}", flush=True)
        trainer.run()
        return final_report(trainer, run_dir, device, data)
    except KeyboardInterrupt as e:
        why = str(e) or "stopped before the run's state was saved"
        resume = ("" if not (run_dir / "latest.npz").exists() else
                  f"\ncontinue with: python examples/train_isbi.py --resume {run_dir}")
        print(f"\ninterrupted: {why}{resume}", file=sys.stderr)
        raise SystemExit(130)


def parse_args(argv):
    ap = ArgumentParser(description=__doc__.split("\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--data", help="folder with the ISBI files or image/label pairs; 'isbi': "
                                   "$TINYUNET_ISBI_DIR (default ../shared/data/isbi2012); "
                                   "default: the built-in synthetic set ('synthetic')")
    ap.add_argument("--train-slices", metavar="SLICES",
                    help="slices to train on, e.g. 0-24 or 0-9,15 (default: all but the last "
                         "sixth)")
    ap.add_argument("--val-slices", metavar="SLICES",
                    help="slices to validate on (default: the last sixth, at least one)")
    ap.add_argument("--preset", choices=list(PRESETS), default=None,
                    help="network and tile size: paper (base 64, 572), cpu (base 16, 380), "
                         "tiny (base 8, depth 3, 148; the default for the synthetic set)")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR, on its data")
    ap.add_argument("--steps", type=at_least(1), help="total training steps")
    ap.add_argument("--lr", type=positive_float, help="peak learning rate")
    ap.add_argument("--optimizer", choices=["sgd", "adam"])
    ap.add_argument("--weighting", choices=["paper", "balanced", "none"],
                    help="loss weights: the paper's weight map (default), class-balanced, none")
    ap.add_argument("--no-elastic", action="store_true", help="no elastic deformation")
    study = ap.add_argument_group("the recipe, beyond the preset (the laptop study, "
                                  "docs/13-laptop.md); fixed for a run once it has started")
    study.add_argument("--tile", type=at_least(1), help="input tile size (see check_input_size)")
    study.add_argument("--base-channels", type=at_least(1), help="channels of the first level")
    study.add_argument("--depth", type=at_least(1), help="number of 2x2 poolings")
    study.add_argument("--dropout", type=fraction, help="dropout at the end of the contracting "
                                                        "path, in [0, 1)")
    study.add_argument("--momentum", type=fraction, help="SGD momentum, in [0, 1) (paper 0.99)")
    study.add_argument("--lr-schedule", choices=["constant", "cosine", "step"])
    study.add_argument("--warmup", type=at_least(0), help="linear warm-up steps")
    study.add_argument("--w0", type=non_negative_float, help="weight map's border weight (10)")
    study.add_argument("--sigma", type=positive_float, help="weight map's border width in px (5)")
    ap.add_argument("--val-every", type=at_least(1), help="steps between validations")
    ap.add_argument("--val-tta", action="store_true", help="validate with 8-fold TTA")
    ap.add_argument("--device", default=None, help="cpu or gpu (default: $TINYUNET_DEVICE or cpu)")
    ap.add_argument("--seed", type=at_least(0), help="model and sampling seed")
    ap.add_argument("--data-seed", type=at_least(0), help="seed of the synthetic set (0)")
    ap.add_argument("--out", default="runs", help="parent folder of new run directories")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return ap.parse_args(argv)


def at_least(low):
    """An argparse type: a whole number >= low."""
    def whole_number(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return whole_number


def number(valid, ok):
    """An argparse type: a finite number for which ok(value) holds; `valid` says which."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be a number {valid}, got {text!r}")
        return value
    return parse


positive_float = number("> 0", lambda v: v > 0)
non_negative_float = number(">= 0", lambda v: v >= 0)
fraction = number("in [0, 1)", lambda v: 0 <= v < 1)


def resolve_device(name):
    try:
        return backend.resolve_device(name)
    except (ValueError, RuntimeError) as e:
        given = f"--device {name}" if name else f"TINYUNET_DEVICE={os.environ['TINYUNET_DEVICE']}"
        raise UserError(f"{given}: " + str(e).replace("device='cpu'", "--device cpu")) from None


# ---- the data -------------------------------------------------------------------------------
def choose_data(args, saved):
    """(record for config.json, ((train images, labels), (val images, labels)), description).

    A new run takes the data the arguments name; a resumed run takes the data its config.json
    records, and any --data / --*-slices / --data-seed given must agree with it.
    """
    run = saved.get("data") if saved else None
    if saved and run is None:
        if args.data is None:
            raise UserError(f"{args.resume}/config.json does not record the run's data (an older "
                            f"run): give --data, and --train-slices/--val-slices if they were not "
                            f"the defaults")
    if args.data is not None:
        source = data_source(args.data)
    else:
        source = run["source"] if run else "synthetic"
    if run and source != run["source"]:
        given = f"--data {args.data}" + (f" ({source})" if source != args.data else "")
        raise UserError(f"{given} is not this run's data ({run['source']}): leave out --data to "
                        f"resume on the run's data, or start a new run")
    seed = args.data_seed
    if seed is not None and source != "synthetic":
        raise UserError(f"--data-seed is the seed of the synthetic set; {source} is a folder")
    if run and seed is not None and seed != run.get("seed"):
        raise UserError(f"--data-seed {seed} is not this run's ({run.get('seed')})")
    if seed is None:
        seed = run.get("seed") if run else 0
    images, labels, name = load_data(source, args.data, seed)
    n = len(images)
    picked = {}
    for flag, spec, key in [("--train-slices", args.train_slices, "train_slices"),
                            ("--val-slices", args.val_slices, "val_slices")]:
        chosen = parse_slices(spec, n, flag) if spec is not None else None
        if run:
            if chosen is not None and slice_spec(chosen) != run[key]:
                raise UserError(f"{flag} {spec} is not this run's ({run[key]}): leave it out to "
                                f"resume on the run's slices, or start a new run")
            try:
                chosen = parse_slices(run[key], n, flag)
            except UserError:
                raise UserError(f"{source} now has {n} slices, fewer than the run's {flag[2:]} "
                                f"{run[key]}: its data have changed") from None
        elif chosen is None:
            chosen = default_split(n)[key == "val_slices"]
        picked[key] = chosen
    tr, va = picked["train_slices"], picked["val_slices"]
    train, val = (images[tr], labels[tr]), (images[va], labels[va])
    record = dict(source=source, train_slices=slice_spec(tr), val_slices=slice_spec(va),
                  seed=seed if source == "synthetic" else None,
                  fingerprint=fingerprint(*train, *val))
    if run and run.get("fingerprint") not in (None, record["fingerprint"]):
        raise UserError(f"the images or labels in {source} have changed since the run in "
                        f"{args.resume} was made: it resumes only on the same data")
    return record, (train, val), name


def data_source(arg):
    """--data as it is recorded: 'synthetic' or a folder's absolute path."""
    if arg == "synthetic":
        return "synthetic"
    folder = default_isbi_dir() if arg == "isbi" else Path(arg).expanduser()
    return str(folder.resolve())


def load_data(source, arg, seed):
    """(images, labels, description) of a data source; a UserError if it cannot be used."""
    if source == "synthetic":
        images, labels = synthetic_em(seed=seed, **SYNTHETIC)
        return images, labels, "synthetic EM (built in)"
    folder = Path(source)
    shown = (f"--data {arg}" if arg else "the run's data") + (f" ({folder})" if arg != source
                                                              else "")
    if not folder.exists():
        isbi = (" (`--data isbi` is $TINYUNET_ISBI_DIR, else ../shared/data/isbi2012 beside the "
                "checkout)" if arg == "isbi" else "")
        raise UserError(f"{shown}: no such folder{isbi}")
    if not folder.is_dir():
        raise UserError(f"{shown} is a file; give the folder that holds train-volume.tif and "
                        f"train-labels.tif, or *image* / *label* pairs")
    try:
        if (folder / "train-volume.tif").exists() or (folder / "train-labels.tif").exists():
            images, labels, _ = load_isbi(folder)
            return images, labels, f"ISBI 2012 ({folder})"
        if not any(p.is_file() for p in folder.glob("*image*")):
            raise UserError(f"{shown} holds neither the ISBI files "
                            f"(train-volume.tif, train-labels.tif) nor *image* / *label* pairs "
                            f"(PNG, TIFF or JPEG)")
        images, labels = load_pairs(folder)
    except DataError as e:
        raise UserError(str(e)) from None
    return images, labels, f"image/label pairs ({folder})"


def default_split(n):
    """(train, val) slices: the last sixth (at least one slice) validates, the rest trains."""
    if n < 2:
        raise UserError(f"the data has only {n} slice, too few to split: give --train-slices 0 "
                        f"and --val-slices 0 to train and validate on it")
    n_val = max(1, n // 6)
    return list(range(n - n_val)), list(range(n - n_val, n))


def parse_slices(spec, n, flag):
    """'0-24' or '25,27,29' -> slice numbers, checked against the n slices of the data."""
    out = []
    for part in spec.split(","):
        a, dash, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b if dash else a)
        except ValueError:
            raise UserError(f"{flag} {spec!r}: expected slice numbers like '0-24' or '25,27,29' "
                            f"(the data has slices 0-{n - 1})") from None
        if hi < lo:
            raise UserError(f"{flag} {spec}: the range {part.strip()} is empty (write low-high)")
        out.extend(range(lo, hi + 1))
    bad = [i for i in out if i >= n]
    if bad:
        raise UserError(f"{flag} {spec}: slice {bad[0]} does not exist: the data has {n} slices "
                        f"(0-{n - 1})")
    return out


def slice_spec(indices):
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], None
    for i, k in enumerate(indices):
        if start is None:
            start = k
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            parts.append(f"{start}-{k}" if k > start else f"{k}")
            start = None
    return ",".join(parts)


def fingerprint(*arrays):
    """A short hash of the data a run trains and validates on."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# ---- the run --------------------------------------------------------------------------------
def read_run(run_dir):
    """The config.json of a run directory given to --resume."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"--resume {run_dir}: no such run directory")
    if not run_dir.is_dir():
        hint = (f" (did you mean --resume {run_dir.parent}?)"
                if (run_dir.parent / "config.json").exists() else "")
        raise UserError(f"--resume {run_dir} is a file: it takes a run directory, the folder with "
                        f"config.json and latest.npz{hint}")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        raise UserError(f"--resume {run_dir} is not a run directory (no config.json)") from None
    except ValueError as e:
        raise UserError(f"{run_dir / 'config.json'} is damaged ({e})") from None
    return saved


# settings a resumed run may change (a longer run, other validations); the others are fixed
RESUMABLE = ("steps", "val_every", "val_tta")


def make_config(args, saved, device, data):
    given = dict(steps=args.steps, lr=args.lr, optimizer=args.optimizer, weighting=args.weighting,
                 val_every=args.val_every, seed=args.seed, tile=args.tile,
                 base_channels=args.base_channels, depth=args.depth, dropout=args.dropout,
                 momentum=args.momentum, lr_schedule=args.lr_schedule, warmup=args.warmup,
                 w0=args.w0, sigma=args.sigma)
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.no_elastic:
        overrides["elastic"] = False
    if args.val_tta:
        overrides["val_tta"] = True
    if saved:
        if args.preset and args.preset != saved.get("preset"):
            raise UserError(f"--preset {args.preset} is not this run's preset "
                            f"({saved.get('preset')!r}): leave it out to resume")
        for k, v in overrides.items():
            if k not in RESUMABLE and k in saved and saved[k] != v:
                flag = "--no-elastic" if k == "elastic" else "--" + k.replace("_", "-")
                raise UserError(f"{flag}: this run has {k} = {saved[k]!r}, fixed once a run "
                                f"has started (a resumed run may change only --steps, "
                                f"--val-every and --val-tta); start a new run to change it")
        try:
            cfg = TrainConfig(**{**saved, **overrides, "device": device, "data": data})
        except TypeError as e:
            raise UserError(f"{args.resume}/config.json has settings this version does not "
                            f"know ({e})") from None
    else:
        preset = args.preset or ("tiny" if data["source"] == "synthetic" else "cpu")
        cfg = TrainConfig.from_preset(preset, device=device, data=data, **overrides)
    try:
        return cfg.check()
    except ValueError as e:
        raise UserError(f"the run's settings: {e}") from None


def checkpoint_step(run_dir):
    try:
        return checkpoint_meta(Path(run_dir) / "latest.npz")["step"]
    except CheckpointError as e:
        raise UserError(str(e)) from None


def new_run_dir(out, preset):
    """A new run directory's name under `out` (made by the Trainer): never an existing one."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; it takes the folder for new run directories")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: cannot write in {parent.resolve()}")
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{preset}"
    out.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):                         # two runs in one second, in two processes
        run_dir = out / (base if k == 1 else f"{base}-{k}")
        try:
            run_dir.mkdir()                          # atomic: only one process makes it
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"--out {out}: 999 run directories named {base}*: give another --out")


def final_report(trainer, run_dir, device, data):
    """The best checkpoint, with and without test-time augmentation -> final_metrics.json."""
    best, meta = model_from_checkpoint(run_dir / "best.npz", device)
    trainer.model = best
    # the final report adds the challenge's topological scores (warping error, V_rand, V_info)
    final = {"step": meta["step"], "data": data["source"],
             "plain": trainer.validate(tta=False, topology=True),
             "tta": trainer.validate(tta=True, topology=True)}
    (run_dir / "final_metrics.json").write_text(json.dumps(final, indent=1))
    print(f"best checkpoint (step {meta['step']}): {fmt(final['plain'])}")
    print(f"  with 8-fold test-time augmentation: {fmt(final['tta'])}")
    print(f"run directory: {run_dir} (checkpoints, log.jsonl, curves.png, predictions.png)")
    return final


def fmt(m):
    return ", ".join(f"{k} {v:.4g}" for k, v in m.items())


if __name__ == "__main__":
    run_cli(main)
