"""The fine-tuning study (README.md beside this file): what starting from a trained model buys a
user with a few annotated frames of their own, on DIC-HeLa and PhC-U373.

    python studies/finetune/run.py --list            # the runs and their commands
    python studies/finetune/run.py all --jobs 2      # every run, two at a time
    python studies/finetune/run.py 1000 --jobs 2     # the 1000-step schedule only (or 500)
    python studies/finetune/run.py --table           # results.md and figures/finetune.png

Each run trains --preset cells for a short schedule (500 or 1000 steps: the run's name says
which, as in hela-1000/2-frames-phc-u373) on 1, 2 or 4 reference frames of a
set, from scratch or from the shipped model of the other set (--init phc-u373 for DIC-HeLa,
--init dic-hela for PhC-U373: a model that never saw the set), and validates on the frames the
cells study validates on (DIC-HeLa 01: frames 39 and 54; PhC-U373 02: 77, 92 and 112), which no
run trains on. The frames trained on are spread over the sequence and nested (the 2 hold the 1,
the 4 hold the 2), partial annotations left out.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # studies/study.py
from study import CTC_DIR as CTC                                # noqa: E402
from study import Study                                         # noqa: E402

STUDY = Study(Path(__file__).resolve().parent)
STEPS = (500, 1000)

# set: (data and validation flags, {frames: --train-slices}, the other set's shipped model)
SETS = {
    # reference frames 002 005 021 031 033 034 039 054 067(partial): slices 0-8
    "hela": ([str(CTC / "DIC-C2DH-HeLa"), "--val-slices", "6,7"],
             {1: "3", 2: "0,3", 4: "0,2,3,5"}, "phc-u373"),
    # reference frames 010 017 019 020 022 026(p) 035 036 041 049 051(p) 052 059 074 077 085(p)
    # 092 106(p) 112: slices 0-18, validating on 14, 16, 18 (the default)
    "u373": ([str(CTC / "PhC-C2DH-U373"), "--val-slices", "14,16,18"],
             {1: "8", 2: "0,8", 4: "0,4,8,12"}, "dic-hela"),
}
RUNS = {}
for s, (data, frames, other) in SETS.items():
    for steps in STEPS:
        for k, slices in frames.items():
            for start in ("scratch", other):
                RUNS[f"{s}-{steps}/{k}-frames-{start}"] = (
                    data + ["--train-slices", slices, "--steps", str(steps)]
                    + ([] if start == "scratch" else ["--init", start]))


def commands(group):
    """The runs of a group: all, or one schedule's (500, 1000)."""
    return {name: ["--data"] + argv + ["--preset", "cells"] for name, argv in RUNS.items()
            if group in ("all", name.split("/")[0].split("-")[1])}


def table():
    rows, points = [], {}
    for name, argv, run, cfg, minutes, m in STUDY.finished(commands("all")):
        head, rest = name.split("/")
        s, steps = head.split("-")[0], int(head.split("-")[1])
        k, start = int(rest.split("-")[0]), rest.split("-frames-")[1]
        last = m["last"]
        rows.append(f"| {name} | {k} | {start if start == 'scratch' else '--init ' + start} | "
                    f"{cfg['data']['train_slices']} | {cfg['steps']} | {minutes:.0f} | "
                    f"{last['plain']['seg']:.4f} / {last['tta']['seg']:.4f} | "
                    f"{last['plain']['f1']:.3f} |")
        points.setdefault(s, {}).setdefault((steps, start == "scratch"), []).append(
            (k, last["plain"]["seg"]))
    path = STUDY.write_table(
        "results.md", "| run | frames trained on | start | their slices | steps | minutes | "
        "validation SEG, last checkpoint (plain / TTA) | F1 at IoU 0.5 (last, plain) |\n"
        "|---|---|---|---|---|---|---|---|", rows)
    if points:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(8, 3.6))
        ax = fig.subplots(1, 2, sharey=True)
        for a, (s, title) in zip(ax, (("hela", "DIC-HeLa"), ("u373", "PhC-U373"))):
            for (steps, scratch), pts in sorted(points.get(s, {}).items()):
                label = ("from scratch" if scratch else f"from the {SETS[s][2]} model")
                a.plot(*zip(*sorted(pts)), "o-" if steps == max(STEPS) else "o:",
                       color="tab:grey" if scratch else "tab:blue",
                       alpha=1.0 if steps == max(STEPS) else 0.5,
                       label=f"{label}, {steps} steps")
            a.set(title=title, xlabel="annotated frames trained on",
                  xticks=[1, 2, 4])
            a.legend(fontsize=8)
        ax[0].set(ylabel="validation SEG (last checkpoint)", ylim=(0, 1))
        fig.tight_layout()
        (STUDY.home / "figures").mkdir(exist_ok=True)
        fig.savefig(STUDY.home / "figures" / "finetune.png", dpi=110)
    return path


if __name__ == "__main__":
    STUDY.cli(__doc__, ("all", "500", "1000"), commands, table)
