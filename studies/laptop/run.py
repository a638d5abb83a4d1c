"""The laptop study (issue 10, docs/13-laptop.md): which ingredients move the ISBI Rand error.

Every run is one `examples/train_isbi.py` command on ISBI 2012 (train slices 0-24, validate
25-29). Short runs rank the choices at one fixed budget of CPU time (the steps of each variant
are set so that each costs about the same time as the baseline's); long runs confirm.

    python benchmarks/laptop_study.py --list                  # the runs and their commands
    python benchmarks/laptop_study.py short --jobs 2          # the ranking runs, two at a time
    python benchmarks/laptop_study.py long --jobs 2           # the shipped preset, two seeds
    python benchmarks/laptop_study.py ema --jobs 2            # the same with averaged weights
    python benchmarks/laptop_study.py ema --only ema/preset-cpu-ema-9000-seed-0   # half the schedule
    python benchmarks/laptop_study.py ship                    # the shipped model, all 30 slices
    python benchmarks/laptop_study.py --table                 # results/laptop_study.md

--jobs 2 runs two commands at once, one thread each (2 cores: 1.35x the throughput of one run
on two threads); a run's minutes in the table are its own wall-clock time under that sharing.
Finished runs (a final_metrics.json) are skipped, unfinished ones resume.
"""
from study import cli, finished, write_table

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
# the long runs again with a moving average of the parameters (issue 20), which changes no
# training step: val_plain validates the raw parameters, i.e. the long runs' own curves
EMA = {f"preset-cpu-ema-seed-{s}": ["--seed", str(s), "--ema", "0.999", "--val-plain"]
       for s in (0, 1)}
# the same on half the schedule: what a 2-core session of three hours can finish beside the cells
# study (0.67 s a step, two runs side by side, on the AMD machine); also the shipped model's run
EMA["preset-cpu-ema-9000-seed-0"] = ["--seed", "0", "--ema", "0.999", "--val-plain",
                                     "--steps", "9000"]
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
    if group in ("ema", "all"):
        for name, extra in EMA.items():
            runs[f"ema/{name}"] = extra
    if group == "ship":
        for name, extra in SHIP.items():
            runs[f"ship/{name}"] = extra
    return runs


def table():
    """The results of the finished runs, in the study's order, as a Markdown table (also
    written to benchmarks/results/laptop_study.md)."""
    rows = []
    for name, extra, run, cfg, minutes, m in finished(commands("all")):
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
    write_table("laptop_study", "| run | settings (beyond `--data isbi --preset cpu`) | optimizer "
                "| steps | minutes | best step | pixel error (plain / TTA) | Rand error | IoU | "
                "warping error | V_rand |\n|---|---|---|---|---|---|---|---|---|---|---|", rows)


def isbi_commands(group):
    return {name: ["--data", "isbi", "--preset", "cpu"] + extra
            for name, extra in commands(group).items()}


if __name__ == "__main__":
    cli(__doc__, ("short", "long", "ema", "ship", "all"), isbi_commands, table)
