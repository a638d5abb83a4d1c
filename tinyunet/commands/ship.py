"""Ship a finished run's last checkpoint as a model: a small file that predict --model NAME,
export and checkpoint.load_model read by name, with its provenance beside it.

    tinyunet ship runs/<run> --name my-model                   # into tinyunet/models/: by name
    tinyunet ship runs/<run> --name my-model --out models/     # any folder: by its path
    tinyunet ship runs/study/ema/<name>/<run> --name isbi2012 --overwrite

Writes NAME.npz (the run's last parameters, averaged where the run kept an average, in float32,
no optimizer state: checkpoint.ship) and NAME.json, its provenance: the command that trained it
(from the train.log a study keeps beside the run, where there is one), the commit the run started
from (in a git checkout), the data and slices (with --silver: the silver truth too, and a block
of frames held out of training that validates), the steps and minutes, the run's own scores on
its validation slices (final_metrics.json: the last checkpoint, the one shipped, and the best for
comparison), and for a model of cells the rule that makes cells of its P(cell)
(instances.recipe: the run's threshold, minimum size and border). The run must be finished; a
model already there is replaced only with --overwrite.

A model of cells may make its cells at another threshold of P(cell) than the run validated at:

    tinyunet ship runs/<run> --name my-cells --threshold silver    # chosen on the silver truth
    tinyunet ship tinyunet/models/phc-u373.npz --name phc-u373 --threshold silver --overwrite

--threshold silver chooses, for a run with the silver truth (--silver), the threshold (of
THRESHOLDS) with the best SEG on the silver truth of the held-out block's frames that have no
reference mask: frames the model never trained on, and not the reference frames it is scored on.
--threshold 0.8 sets one. The card then says what the threshold was chosen on, its scores are
the reference frames' at the new threshold (plain and with TTA), and the run's own (at its
threshold) are kept beside them; predict --instances and the exported package use the card's.
A model shipped before (NAME.npz) may be given in place of the run: its card is carried over.
"""
import argparse
import json
import math
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np

from ..checkpoint import (MODELS, CheckpointError, load_checkpoint, model_from_checkpoint,
                          ship, trained_on)
from ..errors import UserError
from ..files import atomic_write
from ..instances import cell_options, cell_probabilities, label_cells, recipe
from ..rundir import read_run, run_minutes
from .cli import ArgumentParser, at_least

ROOT = Path(__file__).resolve().parents[2]          # the checkout, where tinyunet is one
KEYS = ("pixel_error", "rand_error", "warping_error", "v_rand", "iou", "seg", "f1")
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)    # what --threshold silver tries


def scores(m):
    return {kind: {k: round(m[kind][k], 5) for k in KEYS if k in m[kind]}
            for kind in ("plain", "tta")}


def provenance(run, threads=None):
    """What the shipped model's NAME.json says of the run it comes from."""
    cfg = read_run(run)
    final = json.loads((run / "final_metrics.json").read_text())
    log = next((p for p in (run / "train.log", run.parent / "train.log") if p.exists()), None)
    command = log.read_text().splitlines()[0] if log else None
    if command:                              # as a user types it: python, paths in the checkout
        command = "python " + command.split(" ", 1)[1].replace(str(ROOT) + "/", "").replace(
            str(ROOT.parent / "shared") + "/", "../shared/")   # the shared data beside it
    commit = None
    try:                                     # the commit the run started from (its folder is
        start = datetime.strptime(run.name[:15], "%Y%m%d-%H%M%S")   # named by its start time)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-list", "-1", f"--before={start}",
                                 "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except (ValueError, OSError):
        pass
    d = cfg.get("data") or {}
    minutes = round(run_minutes(run), 1)
    data = {"set": Path(d.get("source") or "?").name, "train_slices": d.get("train_slices"),
            "val_slices": d.get("val_slices"), "fingerprint": d.get("fingerprint")}
    scored_on = f"validation slices {d.get('val_slices')}, which the model never trained on"
    if d.get("silver"):                      # GT+ST: the block's reference frames validate
        data["silver"] = True
        scored_on = (f"the fully annotated reference frames among slices {d.get('val_slices')}, "
                     f"a block of frames held out of training (neither their reference nor their "
                     f"silver masks were trained on)")
    cells = recipe({"train_config": cfg})
    return {
        "command": command,
        "commit": commit,
        "recipe": f"--preset {cfg['preset']}",
        "data": data,
        "steps": cfg["steps"], "seed": cfg["seed"], "ema": cfg.get("ema"),
        "minutes": minutes if minutes == minutes else None,       # NaN: the log has no times
        **({"threads": threads} if threads else {}),
        "shipped": "the last checkpoint (averaged parameters where the run kept an average), "
                   "chosen on nothing",
        "scores_last": {"step": final["last"]["step"], **scores(final["last"])},
        "scores_best": {"step": final["step"], **scores(final)},
        "scored_on": scored_on,
        **({"instances": cells} if cells else {}),   # how predict --instances makes the cells
    }


def threshold_arg(text):
    if text == "silver":
        return text
    try:
        t = float(text)
    except ValueError:
        t = math.nan
    if not 0 < t < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a threshold in (0, 1) or 'silver'")
    return t


def rethreshold(model_file, prov, threshold, data=None):
    """The card `prov` of a model of cells made at another threshold of P(cell): `threshold`, or
    "silver": the best of THRESHOLDS on the silver truth of the frames of its validation block
    that have no reference mask. Its scores_last are the reference frames' of that block at the
    threshold; the run's (at its own) are kept as run_scores."""
    from .. import metrics
    from ..data import DataError
    from ..data.ctc import load_ctc
    from ..data.selection import parse_slices
    model, meta = model_from_checkpoint(model_file, "cpu", dtype="float32")   # as it ships
    cfg = meta.get("train_config") or {}
    if cfg.get("labels") != "instances":
        raise UserError("--threshold: this model was trained on membrane labels, not on "
                        "instance masks: it makes no cells to threshold")
    source = data or trained_on(meta, model_file)
    if not source:
        raise UserError("--threshold: the model does not record the folder it was trained on: "
                        "give the set's folder with --data")
    d = cfg.get("data") or {}
    if threshold == "silver" and not d.get("silver"):
        raise UserError("--threshold silver: the run trained without the silver truth "
                        "(--silver), so no block of frames was held out to choose on; give a "
                        "number")
    try:
        frames = load_ctc(source, silver=True)
    except (DataError, OSError) as e:
        raise UserError(f"--threshold: the frames the model validated on: {e} (--data gives "
                        f"the set's folder)") from None
    block = parse_slices(d["val_slices"], len(frames.images))
    val = [i for i in block if not frames.silver[i] and not frames.partial[i]]
    border, min_cell, own = cell_options(meta)

    def cells(probs, t):
        return np.stack([label_cells(p, t, border, min_cell) for p in probs])
    chosen_on = None
    if threshold == "silver":
        unseen = [i for i in block if frames.silver[i]]
        probs = cell_probabilities(model, meta, frames.images[unseen])
        by_t = {t: round(metrics.seg(cells(probs, t), frames.instances[unseen])["seg"], 5)
                for t in THRESHOLDS}
        threshold = max(by_t, key=by_t.get)
        chosen_on = {"frames": [frames.names[i] for i in unseen], "truth": "silver",
                     "seg_by_threshold": {f"{t:g}": s for t, s in by_t.items()}}
    scores = {"step": meta["step"]}
    for kind, tta in (("plain", False), ("tta", True)):
        m = metrics.seg(cells(cell_probabilities(model, meta, frames.images[val], tta),
                              threshold), frames.instances[val])
        scores[kind] = {k: round(m[k], 5) for k in ("seg", "f1")}
    prov = dict(prov)
    run_scores = prov.pop("run_scores", None) or {
        "threshold": own, "last": prov.get("scores_last"), "best": prov.pop("scores_best", None)}
    instances = dict(prov.get("instances") or recipe(meta), threshold=threshold)
    if chosen_on:
        instances["chosen_on"] = chosen_on
    else:
        instances.pop("chosen_on", None)
    prov.update(scores_last=scores, run_scores=run_scores, instances=instances)
    return prov


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory (with final_metrics.json), "
                    "or a model shipped before (NAME.npz, its card carried over)")
    ap.add_argument("--name", required=True, help="the model's name (letters, digits, - _)")
    ap.add_argument("--out", type=Path, default=MODELS,
                    help="the folder to write NAME.npz and NAME.json into (default: "
                         "tinyunet/models, where predict --model NAME finds them; elsewhere, "
                         "give predict the file's path)")
    ap.add_argument("--threads", type=at_least(1), help="the threads the run trained with, for "
                    "the provenance (a run's files do not record them)")
    ap.add_argument("--threshold", type=threshold_arg, help="a model of cells: the threshold of "
                    "P(cell) its cells are made at, in (0, 1), or 'silver': the best on the "
                    "silver truth of the held-out block's unannotated frames (a --silver run)")
    ap.add_argument("--data", type=Path, help="with --threshold: the set's folder (default: "
                    "the one the run trained on)")
    ap.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    run = args.run
    if not args.name.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"--name {args.name!r}: use letters, digits, - and _ only")
    if run.suffix == ".npz":                 # a model shipped before: its card carried over
        try:
            meta, _, _ = load_checkpoint(run)
        except CheckpointError as e:
            raise UserError(str(e)) from None
        if not meta.get("provenance"):
            raise UserError(f"{run} is no shipped model (it has no provenance): give its run's "
                            f"folder")
        prov, source = meta["provenance"], run
    else:
        try:
            read_run(run)
        except ValueError as e:
            raise UserError(str(e)) from None
        if not (run / "final_metrics.json").exists():
            raise UserError(f"{run} is not a finished run (no final_metrics.json: it is written "
                            f"when training ends)")
        prov, source = provenance(run, args.threads), run / "latest.npz"
    out, card = args.out / f"{args.name}.npz", args.out / f"{args.name}.json"
    there = [p for p in (out, card) if p.exists()]
    if there and not args.overwrite:
        raise UserError(f"{there[0]} exists: --overwrite replaces it")
    if args.threshold is not None:
        prov = rethreshold(source, prov, args.threshold, args.data)
        chose = prov["instances"].get("chosen_on")
        if chose:
            print("SEG on the silver truth of frames never trained on: " + ", ".join(
                f"{t}: {s:.4f}" for t, s in chose["seg_by_threshold"].items()))
        print(f"cells at P(cell) > {prov['instances']['threshold']:g}: SEG "
              f"{prov['scores_last']['plain']['seg']:.4f} (TTA "
              f"{prov['scores_last']['tta']['seg']:.4f}) on the reference frames it never "
              f"trained on")
    args.out.mkdir(parents=True, exist_ok=True)
    ship(source, out, prov)
    atomic_write(card, lambda f: f.write((json.dumps(prov, indent=1) + "\n").encode()))
    meta, _, _ = load_checkpoint(out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, step {meta['step']}) and "
          f"{args.name}.json")
    return out
