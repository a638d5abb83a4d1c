"""The averaged weights' study (README.md beside this file): does the moving average remove the
jumps of the validation error, and how good is the last averaged checkpoint, chosen on nothing?

    python studies/averaged-weights/run.py --jobs 2     # the two runs (--ema 0.999 --val-plain)
    python studies/averaged-weights/run.py --only ema/preset-cpu-ema-9000-seed-0   # half the schedule
    python studies/averaged-weights/figures.py          # -> figures/ema_curves.png, results.md

Each run validates both its averaged and its raw parameters at every validation (the raw
parameters are the training itself: the average changes no step), so one run gives both curves.
"""
import json

import numpy as np

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # studies/study.py
from study import Study                                         # noqa: E402

STUDY = Study(Path(__file__).resolve().parent)
FIGURES = STUDY.home / "figures"
RUNS = {f"seed {s}": f"ema/preset-cpu-ema-seed-{s}" for s in (0, 1)}
RUNS["seed 0, 9000 steps"] = "ema/preset-cpu-ema-9000-seed-0"


def curves(run):
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    va = [r for r in log if "val" in r and r["step"] > 0]
    steps = np.array([r["step"] for r in va])
    avg = {k: np.array([r["val"][k] for r in va]) for k in ("rand_error", "pixel_error")}
    raw = {k: np.array([r["val_plain"][k] for r in va]) for k in ("rand_error", "pixel_error")}
    return steps, avg, raw


def jumps(steps, values):
    """Over the second half of training: the mean absolute change of the validation Rand
    error from one validation to the next, and its range."""
    second = values[steps > steps.max() / 2]
    return float(np.mean(np.abs(np.diff(second)))), float(second.max() - second.min())


def main():
    from matplotlib.figure import Figure
    present = {name: run for name, group in RUNS.items() if (run := STUDY.run_dir_of(group))}
    if not present:
        raise SystemExit("no run of the study yet: python studies/averaged-weights/run.py")
    fig = Figure(figsize=(6 * len(present), 4.4))
    ax = np.atleast_1d(fig.subplots(1, len(present)))
    rows = []
    for (name, run), a in zip(present.items(), ax):
        steps, avg, raw = curves(run)
        a.plot(steps, raw["rand_error"], ".--", color="0.5", label="raw parameters")
        a.plot(steps, avg["rand_error"], "o-", color="C1", label="moving average (0.999)")
        a.set(xlabel="step", ylabel="validation Rand error (slices 25-29)", yscale="log",
              title=f"--preset cpu, {name}")
        a.legend()
        done = (run / "final_metrics.json").exists()
        final = json.loads((run / "final_metrics.json").read_text()) if done else None
        j_raw, j_avg = jumps(steps, raw["rand_error"]), jumps(steps, avg["rand_error"])
        best_raw = int(np.argmin(raw["rand_error"]))
        rows.append(dict(
            name=name, steps=int(steps.max()), done=done,
            raw_best=(int(steps[best_raw]), raw["rand_error"][best_raw],
                      raw["pixel_error"][best_raw]),
            raw_last=(raw["rand_error"][-1], raw["pixel_error"][-1]),
            avg_last=(avg["rand_error"][-1], avg["pixel_error"][-1]),
            jumps_raw=j_raw, jumps_avg=j_avg, final=final))
    fig.tight_layout()
    FIGURES.mkdir(exist_ok=True)
    fig.savefig(FIGURES / "ema_curves.png", dpi=110)
    lines = ["| run | steps | raw: best (step), Rand / pixel | raw: last, Rand / pixel | "
             "averaged: best checkpoint (step), Rand / pixel, plain / TTA | **averaged: last "
             "checkpoint, Rand / pixel, plain / TTA** | second half: mean jump / range of the "
             "Rand error, raw vs averaged |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["final"]
        best = (f"{f['step']}: {f['plain']['rand_error']:.4f} / {f['plain']['pixel_error']:.4f}, "
                f"{f['tta']['rand_error']:.4f} / {f['tta']['pixel_error']:.4f}") if f else "-"
        last = (f"**{f['last']['plain']['rand_error']:.4f} / {f['last']['plain']['pixel_error']:.4f}"
                f", {f['last']['tta']['rand_error']:.4f} / {f['last']['tta']['pixel_error']:.4f}**"
                ) if f else (f"{r['avg_last'][0]:.4f} / {r['avg_last'][1]:.4f} (so far)")
        lines.append(
            f"| {r['name']} | {r['steps']} | {r['raw_best'][0]}: {r['raw_best'][1]:.4f} / "
            f"{r['raw_best'][2]:.4f} | {r['raw_last'][0]:.4f} / {r['raw_last'][1]:.4f} | {best} | "
            f"{last} | {r['jumps_raw'][0]:.4f} / {r['jumps_raw'][1]:.4f} vs "
            f"{r['jumps_avg'][0]:.4f} / {r['jumps_avg'][1]:.4f} |")
    STUDY.write_table("results.md", "\n".join(lines[:2]), lines[2:])
    print(f"wrote {FIGURES / 'ema_curves.png'}")


if __name__ == "__main__":
    main()
