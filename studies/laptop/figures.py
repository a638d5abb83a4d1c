"""Figures of the laptop study (README.md beside this file) from the runs of run.py.

    python studies/laptop/figures.py          # figures/laptop_curves.png, laptop_merges.png

laptop_curves.png: the validation Rand error of the short runs against training minutes (one
budget of CPU time), and of the long runs against steps. laptop_merges.png: one validation
slice predicted by the first long run's best checkpoint (8-fold TTA), with the true cells that
the prediction merges or splits at the stack's Rand threshold; the merge and split counts of
every validation slice are printed.
"""
import json
from pathlib import Path

import numpy as np

from tinyunet.plots import plot_merges_splits

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "runs" / "study"
FIGURES = Path(__file__).resolve().parent / "figures"


def runs(group):
    """{name: run directory} of the runs of a group (short, long) that have validated since
    step 0: finished, or still running (their curves so far, their best checkpoint so far)."""
    return {f.parent.parent.name: f.parent
            for f in sorted((STUDY / group).glob("*/*/best.npz"))}


def curve(run):
    """(minutes, steps, rand errors, pixel errors) of a run's validations after step 0."""
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    seconds, out = 0.0, []
    for r in log:
        if "seconds" in r:
            seconds = r["seconds"]
        elif "val" in r and r["step"] > 0:
            out.append((seconds / 60, r["step"], r["val"]["rand_error"], r["val"]["pixel_error"]))
    return [np.array(c) for c in zip(*out)]


def plot_curves():
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 4.4))
    ax = fig.subplots(1, 2)
    for name, run in runs("short").items():
        minutes, _, rand, _ = curve(run)
        style = "-" if name.startswith("adam") else "--"
        ax[0].plot(minutes, rand, style, marker="o", ms=3, label=name)
    ax[0].set(xlabel="training minutes (two runs side by side, one thread each)",
              ylabel="validation Rand error (slices 25-29)", yscale="log",
              title="short runs: one budget of CPU time (dashed: SGD, solid: Adam)")
    ax[0].legend(fontsize=8, ncol=2)
    for name, run in runs("long").items():
        _, steps, rand, pixel = curve(run)
        line = ax[1].plot(steps, rand, "-", label=f"{name}: Rand error")
        ax[1].plot(steps, pixel, ":", color=line[0].get_color(), label=f"{name}: pixel error")
    ax[1].axhline(0.045, color="0.3", lw=1, ls="--")
    ax[1].text(0, 0.046, "target Rand 0.045", fontsize=8, color="0.3")
    ax[1].set(xlabel="step", ylabel="validation error", yscale="log",
              title="long runs: the shipped --preset cpu, two seeds")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "laptop_curves.png", dpi=130)
    print(f"wrote {FIGURES / 'laptop_curves.png'}")


def plot_merges():
    from tinyunet.checkpoint import model_from_checkpoint
    from tinyunet.data import labels_to_classes, normalise
    from tinyunet.data.selection import load_source, parse_slices
    from tinyunet.infer import predict_tiled
    from tinyunet.metrics import evaluate, merges_and_splits
    name, run = next(iter(runs("long").items()))
    done = (run / "final_metrics.json").exists()
    cfg = json.loads((run / "config.json").read_text())
    model, meta = model_from_checkpoint(run / "best.npz")
    images, labels = load_source(cfg["data"]["source"])[:2]
    val = parse_slices(cfg["data"]["val_slices"], len(images), "val_slices")
    x = normalise(images[val], meta["mean"], meta["std"])
    probs = np.stack([predict_tiled(model, im, tile=cfg["tile"], tta=True)[1] for im in x])
    truth = labels_to_classes(labels[val]) > 0
    res = evaluate(probs, truth, topology=False)
    t = res["thresholds"]["rand_error"]
    counts = [merges_and_splits(p > t, g) for p, g in zip(probs, truth)]
    for k, c in zip(val, counts):
        print(f"slice {k}: {c['merges']} merges, {c['splits']} splits at p > {t:.2f}")
    worst = int(np.argmax([c["merges"] + c["splits"] for c in counts]))
    plot_merges_splits(images[val[worst]], truth[worst], probs[worst], t,
                       FIGURES / "laptop_merges.png",
                       title=f"{name}, best checkpoint{'' if done else ' so far'} (step "
                             f"{meta['step']}), validation slice {val[worst]} (8-fold TTA; "
                             f"stack Rand error {res['rand_error']:.4f})")
    print(f"wrote {FIGURES / 'laptop_merges.png'}")


if __name__ == "__main__":
    if not (runs("short") or runs("long")):
        raise SystemExit(f"no runs of the study in {STUDY}: run studies/laptop/run.py first "
                         f"(the figures in {FIGURES} are kept)")
    plot_curves()
    if runs("long"):
        plot_merges()
