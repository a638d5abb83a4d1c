"""Ship a finished run's last checkpoint as a model of tinyunet (tinyunet/models/, issue 20).

    python benchmarks/ship_model.py runs/study/ema/preset-cpu-ema-9000-seed-0/<run> --threads 1

Writes tinyunet/models/NAME.npz (the run's last averaged parameters in float32, no optimizer
state: checkpoint.ship) and NAME.json, its provenance: the command that trained it, the commit,
the data and slices, the steps and minutes, and the run's own scores on its validation slices
(final_metrics.json: the last checkpoint, which is the one shipped, and the best for
comparison). The run must be finished; a shipped model already there is replaced only with
--overwrite.
"""
import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from study import ROOT, run_minutes

from tinyunet.checkpoint import MODELS, load_checkpoint, ship


def scores(m):
    keys = ("pixel_error", "rand_error", "warping_error", "v_rand", "iou")
    return {kind: {k: round(m[kind][k], 5) for k in keys if k in m[kind]}
            for kind in ("plain", "tta")}


def provenance(run, threads=None):
    cfg = json.loads((run / "config.json").read_text())
    final = json.loads((run / "final_metrics.json").read_text())
    train_log = run.parent / "train.log"
    command = (train_log.read_text().splitlines()[0] if train_log.exists() else None)
    if command:                                  # as a user types it: python, paths in the checkout
        command = "python " + command.split(" ", 1)[1].replace(str(ROOT) + "/", "")
    # the commit the run started from (its folder is named by its start time)
    start = datetime.strptime(run.name[:15], "%Y%m%d-%H%M%S")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-list", "-1", f"--before={start}",
                             "HEAD"], capture_output=True, text=True).stdout.strip()
    d = cfg["data"]
    return {
        "command": command,
        "commit": commit or None,
        "recipe": f"--preset {cfg['preset']}",
        "data": {"set": Path(d["source"]).name, "train_slices": d["train_slices"],
                 "val_slices": d["val_slices"], "fingerprint": d.get("fingerprint")},
        "steps": cfg["steps"], "seed": cfg["seed"], "ema": cfg["ema"],
        "minutes": round(run_minutes(run)), **({"threads": threads} if threads else {}),
        "shipped": "the last checkpoint (averaged parameters), chosen on nothing",
        "scores_last": {"step": final["last"]["step"], **scores(final["last"])},
        "scores_best": {"step": final["step"], **scores(final)},
        "scored_on": f"validation slices {d['val_slices']}, which the model never trained on",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory (final_metrics.json)")
    ap.add_argument("--name", default="isbi2012")
    ap.add_argument("--threads", type=int, help="the threads the run trained with, for the "
                    "provenance (the studies' runs: 1); not recorded in a run's files")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    run = args.run
    if not (run / "final_metrics.json").exists():
        sys.exit(f"error: {run} is not a finished run (no final_metrics.json)")
    out = MODELS / f"{args.name}.npz"
    if out.exists() and not args.overwrite:
        sys.exit(f"error: {out} exists: --overwrite replaces it")
    prov = provenance(run, args.threads)
    ship(run / "latest.npz", out, prov)
    (MODELS / f"{args.name}.json").write_text(json.dumps(prov, indent=1) + "\n")
    meta, params, _ = load_checkpoint(out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, step {meta['step']}) and "
          f"{args.name}.json")
    print(json.dumps(prov, indent=1))


if __name__ == "__main__":
    main()
