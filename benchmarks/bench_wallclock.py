"""Wall-clock time of whole training runs on this machine: a preset run to its end, as a user
runs it from a clean clone (the Numba kernels compiled afresh: an empty NUMBA_CACHE_DIR), alone
on the machine or two seeds side by side.

    python benchmarks/bench_wallclock.py cpu        # --preset cpu on ISBI, seed 0, all cores
    python benchmarks/bench_wallclock.py cpu1       # the same, seed 1
    python benchmarks/bench_wallclock.py floor      # --preset cpu --lr-floor 0.1, seeds 0 and 1
                                                    # side by side, one thread each
    python benchmarks/bench_wallclock.py short      # --preset cpu --steps 14000, seeds 0 and 1
                                                    # side by side, one thread each
    python benchmarks/bench_wallclock.py cells      # --preset cells on DIC-HeLa, seed 0
    python benchmarks/bench_wallclock.py pair       # --preset cpu, seeds 0 and 1, one thread each
    python benchmarks/bench_wallclock.py --table    # results/wallclock.md from the finished runs,
                                                    # results/wallclock_isbi_curves.png

Each run is a study run (studies/study.py: runs/study/wallclock/<name>, its logs kept in
results/runs/wallclock/<name>, a line a minute in train.log). The table (results/wallclock.md)
gains a row per run name and keeps the rows of runs that are not on this machine. Nothing else
should run beside these: the minutes are the measurement.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "studies"))            # the studies' runner
from study import CTC_DIR, Study                            # noqa: E402

STUDY = Study(HERE / "results")                             # logs in results/runs/wallclock/
LOGS = STUDY.logs

RUNS = {
    "cpu": {"wallclock/preset-cpu-seed-0": ["--data", "isbi", "--preset", "cpu", "--seed", "0"]},
    "cpu1": {"wallclock/preset-cpu-seed-1": ["--data", "isbi", "--preset", "cpu", "--seed", "1"]},
    # the learning rate held at lr / 10 from step 14500 on (the cosine's first 80 % unchanged)
    "floor": {f"wallclock/pair-preset-cpu-floor-seed-{s}": [
        "--data", "isbi", "--preset", "cpu", "--seed", str(s), "--lr-floor", "0.1"]
        for s in (0, 1)},
    # the schedule ended at 14000 steps: the 18000-step runs' validations were lowest before
    # step 15000 on both seeds (results/wallclock_isbi_curves.png)
    "short": {f"wallclock/pair-preset-cpu-14000-seed-{s}": [
        "--data", "isbi", "--preset", "cpu", "--seed", str(s), "--steps", "14000"]
        for s in (0, 1)},
    "cells": {"wallclock/cells-hela-seed-0": ["--data", str(CTC_DIR / "DIC-C2DH-HeLa"),
                                              "--val-slices", "6,7", "--preset", "cells",
                                              "--seed", "0"]},
    "pair": {f"wallclock/pair-preset-cpu-seed-{s}": ["--data", "isbi", "--preset", "cpu",
                                                     "--seed", str(s)] for s in (0, 1)},
}
HEAD = ("| run | command (`python examples/train_isbi.py ...`) | threads | steps | minutes, "
        "whole command | minutes of training | s / step | commit | last checkpoint, plain (TTA) |\n"
        "|---|---|---|---|---|---|---|---|---|")


def row(name, argv, run, cfg, minutes, metrics):
    info = LOGS / name / "wallclock.json"
    info = json.loads(info.read_text()) if info.exists() else {}
    last = metrics.get("last", {})
    key = "seg" if cfg.get("labels") == "instances" else "rand_error"
    score = ""
    if last:
        score = f"{key} {last['plain'][key]:.4f} ({last['tta'][key]:.4f})"
        if key == "rand_error":
            score += (f", pixel_error {last['plain']['pixel_error']:.4f} "
                      f"({last['tta']['pixel_error']:.4f})")
    wall = info.get("command_minutes", float("nan"))
    return (f"| {name} | `{' '.join(argv)}` | {info.get('threads', '?')} | {cfg['steps']} | "
            f"{wall:.1f} | {minutes:.1f} | {minutes * 60 / cfg['steps']:.3f} | "
            f"{info.get('commit', '?')} | {score} |")


def write_table():
    """Merge the finished runs' rows into results/wallclock.md by run name; the ISBI runs'
    validation curves from their kept logs."""
    every = {k: v for group in RUNS.values() for k, v in group.items()}
    STUDY.write_table("wallclock.md", HEAD, [row(*r) for r in STUDY.finished(every)])
    plot_isbi_curves(sorted(n for n in every if "preset-cpu" in n))


LINES = {"floor": "--", "14000": ":"}         # the variants' curves, by the name's third-last part
SEEDS = {"0": "tab:blue", "1": "tab:orange"}  # one colour a seed, by the name's last part


def plot_isbi_curves(names):
    """results/wallclock_isbi_curves.png: Rand and pixel error on the validation slices (the
    averaged weights, plain) along each --preset cpu run whose log is kept: where the schedule's
    end stands among its validations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for name in names:
        log = LOGS / name / "log.jsonl"
        if not log.exists():
            continue
        val = [r for r in map(json.loads, log.read_text().splitlines()) if "val" in r and r["step"]]
        for ax, key in zip(axes, ("rand_error", "pixel_error")):
            ax.plot([r["step"] for r in val], [r["val"][key] for r in val], marker=".",
                    color=SEEDS.get(name.split("-")[-1], "tab:gray"),
                    ls=LINES.get(name.split("-")[-3], "-"), label=name.split("/")[-1])
        drawn = True
    if not drawn:
        return plt.close(fig)
    for ax, key, target in zip(axes, ("Rand error", "pixel error"), (0.040, 0.045)):
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.3f}")
        ax.set(xlabel="step", ylabel=key, title=f"{key}, ISBI slices 25-29 (never trained on)")
        ax.legend(fontsize=8)
    axes[0].set_ylim(0.03, 0.12)
    axes[1].set_ylim(0.044, 0.056)
    fig.tight_layout()
    fig.savefig(HERE / "results" / "wallclock_isbi_curves.png", dpi=110)
    plt.close(fig)


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), for the table's machines differ between runs."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("group", nargs="?", choices=list(RUNS))
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.table or a.group is None:
        return write_table()
    runs = RUNS[a.group]
    jobs = len(runs)
    cache = tempfile.mkdtemp(prefix="numba-cache-")      # a clean clone compiles the kernels
    os.environ["NUMBA_CACHE_DIR"] = cache
    commit = os.popen("git rev-parse --short HEAD").read().strip()
    threads = max(1, (os.cpu_count() or 2) // jobs)
    t0 = time.time()
    STUDY.run_all(runs, jobs, threads)
    minutes = (time.time() - t0) / 60
    print(f"{a.group}: {minutes:.1f} min in all (commit {commit})")
    for name in runs:
        if (LOGS / name / "final_metrics.json").exists():
            (LOGS / name / "wallclock.json").write_text(json.dumps(dict(
                commit=commit, threads=threads, jobs=jobs, command_minutes=round(minutes, 2),
                numba_cache="empty (compiled afresh)", cpu_count=os.cpu_count(),
                cpu=cpu_model())) + "\n")
    write_table()


if __name__ == "__main__":
    sys.exit(main())
