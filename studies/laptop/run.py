"""The laptop study (README.md beside this file): which ingredients move the ISBI Rand error.

Every run is one `examples/train_isbi.py` command on ISBI 2012 (train slices 0-24, validate
25-29). Short runs rank the choices at one fixed budget of CPU time (the steps of each variant
are set so that each costs about the same time as the baseline's); long runs confirm.

    python studies/laptop/run.py --list                  # the runs and their commands
    python studies/laptop/run.py short --jobs 2          # the ranking runs, two at a time
    python studies/laptop/run.py long --jobs 2           # the shipped preset, two seeds
    python studies/laptop/run.py ship                    # the recipe on all 30 slices
    python studies/laptop/run.py --table                 # results.md (rows merged by run name)

--jobs 2 runs two commands at once, one thread each (2 cores: 1.35x the throughput of one run
on two threads); a run's minutes in the table are its own wall-clock time under that sharing.
Finished runs (a final_metrics.json) are skipped, unfinished ones resume.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # studies/study.py
from study import Study                                         # noqa: E402

STUDY = Study(Path(__file__).resolve().parent)

# short runs: the cpu preset with one change each, at the baseline's time budget
SHORT_STEPS = 1000
SGD = ["--optimizer", "sgd", "--lr", "0.002"]        # the cpu preset before the study
SHORT = {
    # round 1-2: SGD with momentum 0.99 (the paper), one change each
    "baseline": SGD,
    "adam": ["--optimizer", "adam", "--lr", "0.0005"],
    "lr-0.005": ["--optimizer", "sgd", "--lr", "0.005"],
    "balanced": SGD + ["--weighting", "balanced"],
    "no-weights": SGD + ["--weighting", "none"],
    "no-elastic": SGD + ["--no-elastic"],
    # round 3-4: Adam won rounds 1-2 by far; the rest is ranked with Adam
    "adam-lr-0.001": ["--optimizer", "adam", "--lr", "0.001"],
    "adam-tile-572": ["--optimizer", "adam", "--lr", "0.0005", "--tile", "572"],
    "adam-balanced": ["--optimizer", "adam", "--lr", "0.0005", "--weighting", "balanced"],
    "adam-base-32": ["--optimizer", "adam", "--lr", "0.0005", "--base-channels", "32"],
}
# step time / the baseline's (tile 572: 0.60 / 0.216 s in bench_step_cpu; base 32: ~3x)
SHORT_COST = {"adam-tile-572": 2.8, "adam-base-32": 3.0}
# the short and long runs were made before the preset averaged its weights: they still do not
NO_EMA = ["--ema", "0"]
# long runs: the shipped --preset cpu (the short runs' winner, 18000 steps), two seeds
LONG = {"preset-cpu-seed-0": ["--seed", "0"], "preset-cpu-seed-1": ["--seed", "1"]}
# the shipped model (tinyunet/models/isbi2012.npz): the recipe on all 30 training slices, as the
# paper trained its submission; slices 25-29 "validate" only to draw a curve (they train too)
SHIP = {"isbi2012": ["--seed", "0", "--train-slices", "0-29", "--val-slices", "25-29",
                     "--val-every", "3000"]}


def commands(group):
    runs = {}
    if group in ("short", "all"):
        for name, extra in SHORT.items():
            steps = round(SHORT_STEPS / SHORT_COST.get(name, 1.0))
            runs[f"short/{name}"] = extra + ["--steps", str(steps), "--val-every",
                                             str(max(50, steps // 4))] + NO_EMA
    if group in ("long", "all"):
        for name, extra in LONG.items():
            runs[f"long/{name}"] = extra + NO_EMA
    if group == "ship":
        for name, extra in SHIP.items():
            runs[f"ship/{name}"] = extra
    return runs


def table():
    """The finished runs' rows merged into results.md (by run name: no row is ever lost)."""
    rows = []
    for name, extra, run, cfg, minutes, m in STUDY.finished(commands("all")):
        p, t = m["plain"], m["tta"]
        extra = extra[:-2] if extra[-2:] == NO_EMA else extra
        shown = [a for k, a in enumerate(extra) if a not in ("--steps", "--val-every")
                 and extra[k - 1] not in ("--steps", "--val-every")]
        change = " ".join(shown) or "(the preset)"
        rows.append(f"| {name} | `{change}` | {cfg['optimizer']} | {cfg['steps']} | "
                    f"{minutes:.0f} | {m['step']} | "
                    f"{p['pixel_error']:.4f} / {t['pixel_error']:.4f} | "
                    f"{p['rand_error']:.4f} / {t['rand_error']:.4f} | "
                    f"{p['iou']:.3f} / {t['iou']:.3f} | "
                    f"{p['warping_error']:.5f} / {t['warping_error']:.5f} | "
                    f"{p['v_rand']:.3f} / {t['v_rand']:.3f} |")
    STUDY.write_table("results.md", "| run | settings (beyond `--data isbi --preset cpu`) | "
                      "optimizer | steps | minutes | best step | pixel error (plain / TTA) | "
                      "Rand error | IoU | warping error | V_rand |\n"
                      "|---|---|---|---|---|---|---|---|---|---|---|", rows)


def isbi_commands(group):
    return {name: ["--data", "isbi", "--preset", "cpu"] + extra
            for name, extra in commands(group).items()}


if __name__ == "__main__":
    STUDY.cli(__doc__, ("short", "long", "ship", "all"), isbi_commands, table)
