"""The averaged weights' study (README.md beside this file): --preset cpu with a moving average
of its parameters (EMA 0.999), validating the average and the raw parameters at every validation
(--val-plain), so that one run gives both curves: the average changes no training step.

    python studies/averaged-weights/run.py --list       # the runs and their commands
    python studies/averaged-weights/run.py --jobs 2     # both seeds, side by side
    python studies/averaged-weights/run.py --only ema/preset-cpu-ema-9000-seed-0   # half the schedule
    python studies/averaged-weights/figures.py          # figures/ema_curves.png, results.md

Finished runs (a final_metrics.json) are skipped, unfinished ones resume.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # studies/study.py
from study import Study                                         # noqa: E402

STUDY = Study(Path(__file__).resolve().parent)
RUNS = {f"ema/preset-cpu-ema-seed-{s}": ["--seed", str(s), "--ema", "0.999", "--val-plain"]
        for s in (0, 1)}
# half the schedule: what a 2-core session finished beside the cells study; the shipped model
RUNS["ema/preset-cpu-ema-9000-seed-0"] = ["--seed", "0", "--ema", "0.999", "--val-plain",
                                          "--steps", "9000"]


def commands(group):
    return {name: ["--data", "isbi", "--preset", "cpu"] + argv for name, argv in RUNS.items()}


def table():
    import runpy
    runpy.run_path(str(STUDY.home / "figures.py"), run_name="__main__")


if __name__ == "__main__":
    STUDY.cli(__doc__, ("ema", "all"), commands, table)
