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
"""
import json
import subprocess
from datetime import datetime
from pathlib import Path

from ..checkpoint import MODELS, load_checkpoint, ship
from ..errors import UserError
from ..files import atomic_write
from ..instances import recipe
from ..rundir import read_run, run_minutes
from .cli import ArgumentParser, at_least

ROOT = Path(__file__).resolve().parents[2]          # the checkout, where tinyunet is one
KEYS = ("pixel_error", "rand_error", "warping_error", "v_rand", "iou", "seg", "f1")


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


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory (with final_metrics.json)")
    ap.add_argument("--name", required=True, help="the model's name (letters, digits, - _)")
    ap.add_argument("--out", type=Path, default=MODELS,
                    help="the folder to write NAME.npz and NAME.json into (default: "
                         "tinyunet/models, where predict --model NAME finds them; elsewhere, "
                         "give predict the file's path)")
    ap.add_argument("--threads", type=at_least(1), help="the threads the run trained with, for "
                    "the provenance (a run's files do not record them)")
    ap.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    run = args.run
    if not args.name.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"--name {args.name!r}: use letters, digits, - and _ only")
    try:
        read_run(run)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not (run / "final_metrics.json").exists():
        raise UserError(f"{run} is not a finished run (no final_metrics.json: it is written "
                        f"when training ends)")
    out, card = args.out / f"{args.name}.npz", args.out / f"{args.name}.json"
    there = [p for p in (out, card) if p.exists()]
    if there and not args.overwrite:
        raise UserError(f"{there[0]} exists: --overwrite replaces it")
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance(run, args.threads)
    ship(run / "latest.npz", out, prov)
    atomic_write(card, lambda f: f.write((json.dumps(prov, indent=1) + "\n").encode()))
    meta, _, _ = load_checkpoint(out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, step {meta['step']}) and "
          f"{args.name}.json")
    return out
