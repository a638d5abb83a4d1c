"""The cells study's numbers frame by frame, and its figures (README.md beside this file).

    python studies/cells/figures.py    # after run.py: frames.md, thresholds.md, weights.md,
                                       # block.md, sizes.md,
                                       # figures/cells_merges.png, cells_weights.png,
                                       # cells_curves.png (tables merged by run name)

For every finished run of studies/cells/run.py, its last checkpoint (the averaged weights,
chosen on nothing) segments its validation frames: SEG, cells merged and split per frame
(metrics.merged_and_split_cells), at the run's threshold of P(cell) (the preset's 0.7; 0.5 for
the runs from before the setting), and SEG at other thresholds. It also segments every frame of the sequence that has no reference mask and scores it
against the challenge's silver truth (computer-made, not a human reference, but frames the run
never trained on), with its merged and split cells frame by frame: two validation frames hold
26 cells, where one merge more or less moves SEG by 0.03; the unannotated frames hold a thousand.

The weight-map comparison (eq. 2's border term, class balancing alone, no weights, and the border
term at 2.5 times the paper's w0, the same recipe on DIC-HeLa) is weights.md: each weighting's SEG on the validation frames (last checkpoint, and the
mean of the validations of the second half of training, which one lucky checkpoint moves less)
and its merges and splits per frame on the silver truth; cells_merges.png shows the merges on
one validation frame, cells_weights.png the merged and split cells frame by frame along the
sequence.

The threshold is chosen on the silver truth (thresholds.md: SEG at each threshold
on the frames never trained on, the best of them, and the validation frames at 0.5 and at it),
so that the frames it is scored on play no part in choosing it. sizes.md does the same for
the smallest cell kept (the runs that hold a block out: SEG and F1 on the block's silver truth
and on the validation frames, at the run's threshold): PhC-U373's extra cells are small.
"""
import json
import re

import numpy as np
from scipy import ndimage as ndi

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # studies/study.py
from run import STUDY, weighting                                # noqa: E402
from study import CTC_DIR                                       # noqa: E402
from tinyunet import metrics
from tinyunet.checkpoint import model_from_checkpoint
from tinyunet.data import load_stack
from tinyunet.data.ctc import load_ctc
from tinyunet.data.selection import parse_slices
from tinyunet.instances import cell_probabilities, label_cells

FIGURES = STUDY.home / "figures"
RUNS = {"presets/hela": "DIC-C2DH-HeLa", "presets/u373": "PhC-C2DH-U373",
        "weights/hela-balanced": "DIC-C2DH-HeLa", "weights/hela-none": "DIC-C2DH-HeLa",
        "weights/hela-w0-25": "DIC-C2DH-HeLa", "weights/u373-w0-25": "PhC-C2DH-U373",
        "seeds/u373-seed-1": "PhC-C2DH-U373", "seeds/u373-w0-25-seed-1": "PhC-C2DH-U373",
        "silver/hela": "DIC-C2DH-HeLa", "silver/u373": "PhC-C2DH-U373",
        "full/hela-silver": "DIC-C2DH-HeLa", "full/u373-silver": "PhC-C2DH-U373",
        "full/hela-silver-seed-1": "DIC-C2DH-HeLa", "full/u373-silver-seed-1": "PhC-C2DH-U373",
        "long/u373-silver-15000": "PhC-C2DH-U373",
        "long/u373-silver-15000-seed-1": "PhC-C2DH-U373"}
WEIGHTINGS = ("presets/hela", "weights/hela-")      # the weight-map comparison (weights.md)
# the block of frames that the silver runs hold out of training (run.py): its frames without a
# reference mask, against the silver truth, are frames no run of the study trains on, the ones
# to compare every run on and to choose on (block.md)
BLOCKS = {"DIC-C2DH-HeLa": range(36, 58), "PhC-C2DH-U373": range(77, 115)}
# the tables' columns (rows from before 0.8 and 0.9: "-"); tinyunet ship --threshold silver
# chooses a shipped model's own on a finer grid, 0.85 and 0.95 added (ship.THRESHOLDS)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_CELLS = (50, 100, 200, 400)     # the smallest cell kept, in px (sizes.md; the preset's 100)


def segment(probs, cfg, threshold, min_cell=None):
    """The cells of each P(cell) map (label_cells with the run's border; min_cell: the run's
    unless given), stacked."""
    return np.stack([label_cells(p, threshold, cfg["border"],
                                 cfg["min_cell"] if min_cell is None else min_cell)
                     for p in probs])


def silver_scores(model, meta, cfg, name, trained, only=None, cache=None, sizes=()):
    """The frames that the run never trained on, against the silver truth (only: just the
    frames of these numbers that have no reference mask): SEG at each threshold, and at the
    run's own (0.5 for runs older than the setting) the frames, their merged and split cells
    and their cell counts, and SEG and F1 at each smallest cell kept in sizes. cache: {frame:
    P(cell)} of this model, filled and read (a second call predicts no frame twice)."""
    cache = {} if cache is None else cache
    folder = CTC_DIR / name
    seq = sorted(p.parent.name[:-3] for p in folder.glob("*_GT/SEG"))[0]
    reference = {p.name for p in (folder / f"{seq}_GT" / "SEG").glob("man_seg*.tif")}
    probs, ref, frames = [], [], []
    for st in sorted((folder / f"{seq}_ST" / "SEG").glob("man_seg*.tif")):
        t = re.findall(r"\d+", st.name)[-1]
        if f"{seq}/t{t}" in trained or only is not None and (int(t) not in only
                                                             or st.name in reference):
            continue
        if t not in cache:
            cache[t] = cell_probabilities(model, meta,
                                          load_stack(folder / seq / f"t{t}.tif"))
        probs += cache[t]
        ref.append(load_stack(st, labels=True)[0].astype(np.int32))
        frames.append(int(t))
    ref = np.stack(ref)
    at = cfg.get("threshold", 0.5)
    by_t = {t: segment(probs, cfg, t) for t in sorted({*THRESHOLDS, at})}
    by_size = {m: metrics.seg(segment(probs, cfg, at, m), ref) for m in sizes}
    return dict(seg=metrics.seg(by_t[at], ref), frames=frames, by_size=by_size,
                by_t={t: metrics.seg(c, ref)["seg"] for t, c in by_t.items()},
                ms=metrics.merged_and_split_cells(by_t[at], ref),
                cells=[len(np.unique(r[r > 0])) for r in ref])


def second_half_seg(log, steps):
    """Mean validation SEG (plain, averaged weights) over the validations of a run's log
    records after steps / 2."""
    return float(np.mean([r["val"]["seg"] for r in log if "val" in r and r["step"] > steps / 2]))


def frames_table(rows):
    """frames.md: a row per run and frame (cells at the run's threshold), merged by both."""
    STUDY.write_table("frames.md", "| run | weighting | frame | SEG (last checkpoint) | cells | "
                      "found | merged | split | |\n|---|---|---|---|---|---|---|---|---|", rows,
                      key_columns=(0, 2))


def main():
    rows, merges, curves, weights, thresholds, block, sizes = [], {}, {}, {}, [], [], []
    for group, name in RUNS.items():
        run = STUDY.run_dir_of(group)
        if run is None or not (run / "final_metrics.json").exists():
            print(f"{group}: not finished")
            continue
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        curves[group] = [(r["step"], r["val"]["seg"]) for r in log if "val" in r]   # from logs
        if not (run / "latest.npz").exists():
            print(f"{group}: only its logs are here ({run}): rerun it for the frame figures")
            continue
        cfg = json.loads((run / "config.json").read_text())
        gtst = bool(cfg["data"].get("silver"))
        images, inst, names, partial, is_silver = load_ctc(CTC_DIR / name, silver=gtst)
        val = parse_slices(cfg["data"]["val_slices"], len(images))
        if gtst:                                   # the block's full reference frames validate
            val = [i for i in val if not is_silver[i] and not partial[i]]
        trained = [names[i] for i in parse_slices(cfg["data"]["train_slices"], len(images))]
        model, meta = model_from_checkpoint(run / "latest.npz")
        probs = cell_probabilities(model, meta, images[val])
        at = cfg.get("threshold", 0.5)             # the run's own: 0.5 before the setting
        by_t = {t: metrics.seg(segment(probs, cfg, t), inst[val])["seg"]
                for t in sorted({*THRESHOLDS, at})}
        cells = [label_cells(p, at, cfg["border"], cfg["min_cell"]) for p in probs]
        for i, c, p in zip(val, cells, probs):
            r = metrics.seg(c, inst[i])
            ms = metrics.merged_and_split_cells(c, inst[i])[0]
            rows.append(f"| {group} | {weighting(cfg)} | {names[i]} | {r['seg']:.4f} | "
                        f"{r['reference']} | {r['predicted']} | {ms['merges']} | "
                        f"{ms['splits']} |")
        seen = {}
        st = silver_scores(model, meta, cfg, name, trained, cache=seen)
        silver, n = st["seg"], len(st["frames"])
        chosen = max(THRESHOLDS, key=st["by_t"].get)
        thresholds.append(
            f"| {group} | {weighting(cfg)} | "
            + " | ".join(f"{st['by_t'][t]:.4f}" for t in THRESHOLDS)
            + f" | {chosen} | {by_t[0.5]:.4f} | {by_t[chosen]:.4f} |")
        rows.append(f"| {group} | {weighting(cfg)} | validation frames | "
                    f"{metrics.seg(np.stack(cells), inst[val])['seg']:.4f} | | | | | "
                    f"thresholds {', '.join(f'{t}: {s:.4f}' for t, s in by_t.items())}; "
                    f"silver truth of the {n} frames without a reference: SEG "
                    f"{silver['seg']:.4f}, F1 {silver['f1']:.3f} |")
        held = silver_scores(model, meta, cfg, name, trained, only=BLOCKS[name], cache=seen,
                             sizes=MIN_CELLS if gtst else ())
        block.append(f"| {group} | {weighting(cfg)} | "
                     f"{'reference + silver' if gtst else 'reference'} | {cfg['seed']} | "
                     f"{cfg['steps']} | {at} | {by_t[at]:.4f} | {held['seg']['seg']:.4f} / "
                     f"{held['seg']['f1']:.3f} | {held['frames'][0]}-{held['frames'][-1]} "
                     f"({len(held['frames'])}) |")
        if gtst:                                   # the smallest cell kept, on the block
            val_size = {m: metrics.seg(segment(probs, cfg, at, m), inst[val]) for m in MIN_CELLS}
            sizes.append(f"| {group} | {cfg['seed']} | {at} | "
                         + " | ".join(f"{held['by_size'][m]['seg']:.4f} / "
                                      f"{held['by_size'][m]['f1']:.3f}" for m in MIN_CELLS)
                         + " | " + " | ".join(f"{val_size[m]['seg']:.4f} / "
                                              f"{val_size[m]['f1']:.3f}" for m in MIN_CELLS)
                         + " |")
        if group.startswith(WEIGHTINGS):
            merges[group] = (images[val[0]], cells[0], inst[val[0]], names[val[0]])
            final = json.loads((run / "final_metrics.json").read_text())["last"]
            val_ms = metrics.merged_and_split_cells(np.stack(cells), inst[val])
            weights[group] = dict(
                name=weighting(cfg), steps=cfg["steps"], plain=final["plain"]["seg"],
                tta=final["tta"]["seg"], half=second_half_seg(log, cfg["steps"]),
                val_merged=sum(m["merges"] for m in val_ms),
                val_split=sum(m["splits"] for m in val_ms), val_cells=int(sum(
                    len(np.unique(r[r > 0])) for r in inst[val])),
                silver=silver["seg"], silver_f1=silver["f1"], frames=st["frames"],
                merged=[m["merges"] for m in st["ms"]], split=[m["splits"] for m in st["ms"]],
                cells=st["cells"])
    frames_table(rows)
    if block:
        STUDY.write_table("block.md", "| run | weighting | masks trained on | seed | steps | "
                          "threshold (the run's) | validation SEG (reference frames, last "
                          "checkpoint) | silver truth of the held-out block: SEG / F1 | its "
                          "frames (how many) |\n|---|---|---|---|---|---|---|---|---|", block)
    if sizes:
        STUDY.write_table("sizes.md", "| run | seed | threshold (the run's) | "
                          + " | ".join(f"held-out block's silver truth, cells of {m} px and "
                                       "more: SEG / F1" for m in MIN_CELLS)
                          + " | " + " | ".join(f"validation frames, {m} px and more: SEG / F1"
                                               for m in MIN_CELLS)
                          + " |\n|" + "---|" * (2 * len(MIN_CELLS) + 3), sizes)
    if thresholds:
        STUDY.write_table("thresholds.md", "| run | weighting | "
                          + " | ".join(f"silver truth: SEG at {t}" for t in THRESHOLDS)
                          + " | chosen on the silver truth | validation SEG at 0.5 | validation "
                          "SEG at the chosen threshold |\n|" + "---|" * (len(THRESHOLDS) + 5),
                          thresholds)
    from matplotlib.figure import Figure
    order = [g for g in RUNS if g in weights]
    if weights:
        lines = []
        for w in order:
            r = weights[w]
            lines.append(
                f"| {r['name']} ({w}) | {r['steps']} | {r['plain']:.4f} / {r['tta']:.4f} | "
                f"{r['half']:.4f} | {r['val_merged']} / {r['val_split']} of {r['val_cells']} | "
                f"{r['silver']:.4f} / {r['silver_f1']:.3f} | {np.mean(r['merged']):.2f} / "
                f"{np.mean(r['split']):.2f} of {np.mean(r['cells']):.1f} | "
                f"{sum(r['merged']) / sum(r['cells']):.1%} / "
                f"{sum(r['split']) / sum(r['cells']):.1%} |")
        STUDY.write_table(
            "weights.md", "| weighting (run) | steps | validation SEG, last checkpoint (plain / "
            "TTA) | validation SEG, mean of the second half's validations | validation frames: "
            "merged / split cells | silver truth: SEG / F1 | silver truth: merged / split cells "
            "per frame | silver truth: share of cells merged / split |\n"
            "|---|---|---|---|---|---|---|---|", lines)
        fig = Figure(figsize=(9, 5.5))
        ax = fig.subplots(2, 1, sharex=True)
        for w in order:
            r = weights[w]
            ax[0].plot(r["frames"], np.array(r["merged"]) / np.array(r["cells"]), ".-", ms=4,
                       label=f"{r['name']}: {sum(r['merged']) / sum(r['cells']):.1%} of the "
                       "cells")
            ax[1].plot(r["frames"], np.array(r["split"]) / np.array(r["cells"]), ".-", ms=4,
                       label=f"{r['name']}: {sum(r['split']) / sum(r['cells']):.1%}")
        ax[0].set(ylabel="share of cells merged", title="DIC-HeLa 01, the frames without a "
                  "reference mask, against the silver truth (last checkpoints)")
        ax[1].set(ylabel="share of cells split", xlabel="frame")
        for a in ax:
            a.legend(fontsize=8, title="weighting", title_fontsize=8)
            a.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(FIGURES / "cells_weights.png", dpi=100)
    if merges:
        from tinyunet.plots import instance_colours
        cols = min(len(order), 2)
        rows_ = -(-len(order) // cols)
        fig = Figure(figsize=(5 * cols, 5.4 * rows_))
        ax = np.atleast_1d(fig.subplots(rows_, cols)).ravel()
        for a in ax[len(order):]:
            a.axis("off")
        for a, w in zip(ax, order):
            image, pred, ref, frame = merges[w]
            ms = metrics.merged_and_split_cells(pred, ref)[0]
            rgb = 0.5 * instance_colours(pred) + 0.5 * (image / image.max())[..., None]
            merged = np.isin(ref, ms["merged"]) & (ref > 0)
            rgb[merged & ~ndi.binary_erosion(merged, iterations=2)] = (1, 0, 0)
            a.imshow(rgb)
            a.set_title(f"{weights[w]['name']}: {ms['merges']} merged, {ms['splits']} split\n"
                        f"(frame {frame}; merged reference cells outlined red)", fontsize=9)
            a.axis("off")
        fig.tight_layout()
        fig.savefig(FIGURES / "cells_merges.png", dpi=100)
    if curves:
        fig = Figure(figsize=(9, 4.5))
        ax = fig.subplots(1, 2, sharey=True)
        for group, c in curves.items():
            a = ax[0 if RUNS[group] == "DIC-C2DH-HeLa" else 1]
            a.plot(*zip(*c), "o-", label=group, ms=3)
        for a, title in zip(ax, ("DIC-HeLa", "PhC-U373")):
            a.set(title=title, xlabel="step")
            a.legend(fontsize=7)
        ax[0].set(ylabel="validation SEG (averaged weights)", ylim=(0, 1))
        fig.tight_layout()
        fig.savefig(FIGURES / "cells_curves.png", dpi=110)


if __name__ == "__main__":
    main()
