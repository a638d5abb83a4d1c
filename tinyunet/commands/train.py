"""Train a U-Net on membranes (ISBI 2012, the built-in synthetic EM set) or on touching cells
(cell tracking challenge sets, instance masks) and report the challenge's metrics.

    python examples/train_isbi.py                                   # synthetic data, tiny preset
    python examples/train_isbi.py --data isbi --preset cpu          # $TINYUNET_ISBI_DIR
    python examples/train_isbi.py --data ../shared/data/isbi2012 --preset paper --device gpu
    python examples/train_isbi.py --data ../shared/data/ctc/DIC-C2DH-HeLa   # cells preset
    python examples/train_isbi.py --data my_pairs --train-slices 0-7 --val-slices 8,9
    python examples/train_isbi.py --resume runs/20261121-180000-cpu     # continue a run
    python examples/train_isbi.py --data my_cells --init isbi2012 --steps 1000   # fine-tune

With no arguments it trains a small network on a synthetic EM-like data set for about 15
seconds on 2 CPU cores and shows the validation metrics before and after. --data takes a folder
with the ISBI files (train-volume.tif, train-labels.tif), a cell tracking challenge set
(sequences NN/ with NN_GT/SEG/ masks), or *image* / *label* pairs (membrane labels 0 / 255) or
*image* / *mask* pairs (instance masks), as PNG, TIFF or JPEG; `--data isbi` is the folder
$TINYUNET_ISBI_DIR (default ../shared/data/isbi2012 beside the checkout). Instance data trains
with separation borders and the cells preset, and validates by SEG. The last sixth of the
slices (at least one) validates, the others train (ISBI: 0-24 and 25-29), unless
--train-slices / --val-slices say otherwise. --silver trains a challenge set on its silver
truth too (the challenge's GT+ST training): the slices are all the frames, and the validation
slices a block held out of training, scored on its reference frames (tinyunet/data/selection.py).

Each run writes a run directory (checkpoints, log, figures; see tinyunet/train.py) whose
config.json records the data. Ctrl-C saves the run; --resume continues it on the same data
and ends with the numbers an uninterrupted run would have. A mistake in the arguments or the
data prints one line `error: ...` and exits with status 2 (--debug shows the traceback).
"""
import argparse
import signal
import sys
from pathlib import Path

from .cli import (ArgumentParser, announce_compiling, at_least, device, fraction,
                   non_negative_float, positive_float, probability)
from ..checkpoint import SHIPPED, CheckpointError, checkpoint_meta, model_file
from ..config import LR_SCHEDULES, OPTIMIZERS, PRESETS, TrainConfig
from ..data.samples import AUGMENTS
from ..data.selection import choose_data
from ..data.targets import WEIGHTINGS
from ..errors import UserError
from ..rundir import new_run_dir, read_run, run_step
from ..train import Trainer, final_report, format_scores

# how a user runs this command again (the console command sets "tinyunet train")
PROG = "python examples/train_isbi.py"


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--data", help="folder with the ISBI files, a cell tracking challenge set, or "
                                   "*image*/*label* or *image*/*mask* pairs; 'isbi': "
                                   "$TINYUNET_ISBI_DIR (default ../shared/data/isbi2012); "
                                   "default: the built-in synthetic set ('synthetic')")
    ap.add_argument("--train-slices", metavar="SLICES",
                    help="slices to train on, e.g. 0-24 or 0-9,15 (default: all but the last "
                         "sixth)")
    ap.add_argument("--val-slices", metavar="SLICES",
                    help="slices to validate on (default: the last sixth, at least one)")
    ap.add_argument("--silver", action="store_true",
                    help="a cell tracking challenge set: train on the silver truth (NN_ST/SEG) "
                         "of every frame without a reference mask too; the slices are then all "
                         "the frames, and --val-slices a block held out of training (default: "
                         "from the first default validation frame to the end), validated on "
                         "its reference frames")
    ap.add_argument("--preset", choices=list(PRESETS), default=None,
                    help="network, tile and recipe: paper (base 64, 572), cpu (base 16, 380; "
                         "the default for a folder of membrane labels), cells (the cpu network "
                         "for instance masks; their default), tiny (base 8, depth 3, 148; the "
                         "default for the synthetic set)")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR, on its data")
    ap.add_argument("--init", metavar="MODEL", help="fine-tune: start a new run from the weights "
                    f"of a shipped model ({', '.join(sorted(SHIPPED))}) or of a checkpoint "
                    "(runs/<run>/latest.npz), with a fresh optimizer and schedule; its width "
                    "and depth come from that model")
    ap.add_argument("--steps", type=at_least(1), help="total training steps")
    ap.add_argument("--lr", type=positive_float, help="peak learning rate")
    ap.add_argument("--optimizer", choices=OPTIMIZERS)
    ap.add_argument("--weighting", choices=WEIGHTINGS,
                    help="loss weights: the paper's weight map (default), class-balanced, none")
    ap.add_argument("--no-elastic", action="store_true", help="no elastic deformation")
    study = ap.add_argument_group("the recipe, beyond the preset (the laptop study, "
                                  "studies/laptop/); fixed for a run once it has started")
    study.add_argument("--tile", type=at_least(1), help="input tile size (see check_input_size)")
    study.add_argument("--base-channels", type=at_least(1), help="channels of the first level")
    study.add_argument("--depth", type=at_least(1), help="number of 2x2 poolings")
    study.add_argument("--dropout", type=fraction, help="dropout at the end of the contracting "
                                                        "path, in [0, 1)")
    study.add_argument("--momentum", type=fraction, help="SGD momentum, in [0, 1) (paper 0.99)")
    study.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    study.add_argument("--warmup", type=at_least(0), help="linear warm-up steps")
    study.add_argument("--lr-floor", type=positive_float, help="the learning rate never falls "
                       "below lr times this, in (0, 1] (0.01: the cosine's own end)")
    study.add_argument("--w0", type=non_negative_float, help="weight map's border weight (10)")
    study.add_argument("--sigma", type=positive_float, help="weight map's border width in px (5)")
    study.add_argument("--border", type=at_least(0), help="instance labels: the separation "
                       "border's width between touching cells, px (2)")
    study.add_argument("--min-cell", type=at_least(0), help="instance labels: predicted cells "
                       "smaller than this many px are dropped (validation, prediction)")
    study.add_argument("--threshold", type=probability, help="instance labels: P(cell) above "
                       "which a pixel is a cell's (validation, prediction), in (0, 1) (0.5; "
                       "--preset cells: 0.7)")
    study.add_argument("--augment", choices=AUGMENTS, help="the grey-value change: paper (gain "
                       "and offset ~ N(0, 0.1), the default) or wide (gain and offset ~ "
                       "N(0, 0.3), half the tiles blurred, sigma 0.5-2 px, half with noise of "
                       "std up to 0.1: for data whose brightness, contrast and focus vary)")
    study.add_argument("--ema", type=fraction, help="decay of the parameters' moving average "
                       "(e.g. 0.999), which the run validates and ships; 0: off")
    ap.add_argument("--val-every", type=at_least(1), help="steps between validations")
    ap.add_argument("--val-tta", action="store_true", help="validate with 8-fold TTA")
    ap.add_argument("--val-plain", action="store_true", help="with --ema: validate the raw "
                    "parameters too (log.jsonl's val_plain)")
    ap.add_argument("--device", default=None, help="cpu or gpu (default: $TINYUNET_DEVICE, "
                    "else a resumed run's own device, else cpu)")
    ap.add_argument("--seed", type=at_least(0), help="model and sampling seed")
    ap.add_argument("--data-seed", type=at_least(0), help="seed of the synthetic set (0)")
    ap.add_argument("--out", default="runs", help="parent folder of new run directories")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return ap


# the flags that set a TrainConfig field of the same name
RECIPE = ("steps", "lr", "optimizer", "weighting", "val_every", "seed", "tile", "base_channels",
          "depth", "dropout", "momentum", "lr_schedule", "warmup", "lr_floor", "w0", "sigma",
          "augment", "ema", "border", "min_cell", "threshold")


def main(argv=None):
    args = build_parser().parse_args(argv)
    saved = _read_run(args.resume) if args.resume else None
    dev = run_device(args.device, saved)
    data, (train, val), name = choose_data(args.data, args.train_slices, args.val_slices,
                                           args.data_seed, saved and saved.get("data"),
                                           args.resume, args.silver or None)
    cfg = make_config(args, saved, dev, data)
    if saved:
        run_dir = Path(args.resume)
        at = run_step(run_dir)
        if cfg.steps < at:
            raise UserError(f"--steps {cfg.steps}: the run in {run_dir} is already at step {at}; "
                            f"give --steps {at} or more")
    else:
        try:
            run_dir = new_run_dir(args.out, cfg.preset)
        except ValueError as e:
            raise UserError(f"--out {args.out}: {e}") from None
    # every argument is checked: from here on, things are written
    held = (f"; the validation slices are the reference frames of slices {data['val_slices']}, "
            f"held out of training with their silver truth" if data.get("silver") else "")
    print(f"data: {name}: {len(train[0])} training and {len(val[0])} validation slices "
          f"of {train[0].shape[1]}x{train[0].shape[2]} (slices {data['train_slices']} and "
          f"{data['val_slices']}){held}")
    print(f"run directory: {run_dir}")
    announce_compiling()
    try:
        trainer = Trainer(cfg, train, val, run_dir, resume=bool(saved))
        print(f"model: base {cfg.base_channels}, depth {cfg.depth}, "
              f"{trainer.model.num_parameters():,} parameters, tile {cfg.tile} -> {trainer.out}, "
              f"{cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps, weighting {cfg.weighting}, "
              f"{dev}" + (f", starting from {cfg.init}" if cfg.init else ""), flush=True)
        trainer.run()
    except KeyboardInterrupt as e:
        why = str(e) or "stopped before the run's state was saved"
        resume = (f"\ncontinue with: {PROG} --resume {run_dir}"
                  if (run_dir / "latest.npz").exists() else "")
        print(f"\ninterrupted: {why}{resume}", file=sys.stderr)
        raise SystemExit(128 + (getattr(e, "signum", None) or signal.SIGINT))
    try:
        final = final_report(trainer, dev)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the run is complete and saved, its final report "
              f"(final_metrics.json) is not written: {PROG} --resume {run_dir} writes it",
              file=sys.stderr)
        raise SystemExit(130)
    averaged = " (moving average)" if cfg.ema else ""
    for what, res in (("best", final), ("last", final["last"])):
        print(f"{what} checkpoint{averaged} (step {res['step']}): {format_scores(res['plain'])}")
        print(f"  with 8-fold test-time augmentation: {format_scores(res['tta'])}")
    print(f"run directory: {run_dir} (checkpoints, log.jsonl, curves.png, predictions.png)")
    return final


def run_device(name, saved):
    """The device to train on: --device, else $TINYUNET_DEVICE, else a resumed run's own device
    (a run trained on the GPU does not quietly continue on the CPU), else the CPU. A policy of
    the command line (flags, the environment); cli.device says what is wrong with a device."""
    import os

    from ..backend import resolve_device
    own = (saved or {}).get("device")
    if name is None and own and "TINYUNET_DEVICE" not in os.environ:
        try:
            return resolve_device(own)
        except RuntimeError as e:
            why = str(e).split("; use device=")[0]
            raise UserError(f"this run trained on the {own}, and {why}; give --device cpu to "
                            f"continue it on the CPU") from None
    dev = device(name)
    if own and dev != own:
        print(f"note: the run trained on the {own} and continues on the {dev}: its numbers "
              f"will differ slightly from a run that stayed on the {own}", file=sys.stderr)
    return dev


def _read_run(run_dir):
    try:
        return read_run(run_dir)
    except ValueError as e:
        raise UserError(f"--resume {e}") from None


def init_network(args):
    """The width and depth of the model that --init names (a new run takes them from it); a
    UserError where it is no model, or where --base-channels or --depth ask for another."""
    try:
        model = checkpoint_meta(model_file(args.init))["model"]
    except CheckpointError as e:
        raise UserError(f"--init {args.init}: {e}; give a shipped model "
                        f"({', '.join(sorted(SHIPPED))}) or a checkpoint "
                        f"(runs/<run>/latest.npz)") from None
    for k in ("base_channels", "depth"):
        asked = getattr(args, k)
        if asked is not None and asked != model[k]:
            flag = "--" + k.replace("_", "-")
            raise UserError(f"{flag} {asked}: the model of --init {args.init} has {k} "
                            f"{model[k]}, and a run that starts from it keeps it; leave {flag} "
                            f"out, or train from scratch without --init")
    return dict(base_channels=model["base_channels"], depth=model["depth"])


def make_config(args, saved, dev, data):
    """The run's TrainConfig: a new run's preset with the flags given, or a resumed run's
    config.json with the flags it may change; a UserError names a flag that does not fit."""
    overrides = {k: getattr(args, k) for k in RECIPE if getattr(args, k) is not None}
    overrides["labels"] = data["labels"]                 # membranes or instances: the data's
    if args.init is not None:
        overrides["init"] = args.init
        if not saved:
            overrides.update(init_network(args))
    if args.no_elastic:
        overrides["elastic"] = False
    if args.val_tta:
        overrides["val_tta"] = True
    if args.val_plain:
        overrides["val_plain"] = True
    try:
        if saved:
            # a run of an older version, without the settings, started from random weights and
            # augmented the paper's way
            saved = {"init": None, "augment": "paper", **saved}
            cfg = TrainConfig.resumed(saved, overrides, args.preset, device=dev, data=data)
        else:
            preset = args.preset or ("tiny" if data["source"] == "synthetic" else
                                     "cells" if data["labels"] == "instances" else "cpu")
            cfg = TrainConfig.from_preset(preset, device=dev, data=data, **overrides)
    except ValueError as e:
        raise UserError(f"{args.resume}/{e}" if "config.json" in str(e) else str(e)) from None
    try:
        return cfg.check()
    except ValueError as e:
        raise UserError(f"the run's settings: {e}") from None
