"""The cells study's numbers frame by frame, and its figures (issue 18, docs/15-cells.md).

    python benchmarks/cells_figures.py            # after cells_study.py: results/cells_frames.md,
                                                  # docs/figures/cells_merges.png, cells_curves.png

For every finished run of benchmarks/cells_study.py, its last checkpoint (the averaged weights,
chosen on nothing) segments its validation frames: SEG, cells merged and split per frame
(metrics.merged_and_split_cells), and SEG at other thresholds of P(cell) than the 0.5 the preset
uses. It also segments every frame of the sequence that has no reference mask and scores it
against the challenge's silver truth (computer-made, not a human reference, but frames the run
never trained on). The figure compares the merges of the three weightings on DIC-HeLa.
"""
import json
import re

import numpy as np
from scipy import ndimage as ndi

from study import CTC_DIR, RESULTS, ROOT, run_dir_of
from tinyunet import metrics
from tinyunet.checkpoint import model_from_checkpoint
from tinyunet.data import load_stack, normalise
from tinyunet.data.ctc import load_ctc
from tinyunet.data.selection import parse_slices
from tinyunet.infer import label_cells, predict_tiled

FIGURES = ROOT / "docs" / "figures"
RUNS = {"presets/hela": "DIC-C2DH-HeLa", "presets/u373": "PhC-C2DH-U373",
        "weights/hela-balanced": "DIC-C2DH-HeLa", "weights/hela-none": "DIC-C2DH-HeLa"}
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def probabilities(model, meta, images, tile):
    return [predict_tiled(model, im, tile=tile, channel=1)
            for im in normalise(images, meta["mean"], meta["std"])]


def silver_scores(model, meta, cfg, name, trained):
    """SEG against the silver truth of the frames without a reference mask."""
    folder = CTC_DIR / name
    seq = sorted(p.parent.name[:-3] for p in folder.glob("*_GT/SEG"))[0]
    pred, ref = [], []
    for st in sorted((folder / f"{seq}_ST" / "SEG").glob("man_seg*.tif")):
        t = re.findall(r"\d+", st.name)[-1]
        if f"{seq}/t{t}" in trained:
            continue
        image = load_stack(folder / seq / f"t{t}.tif")
        p = probabilities(model, meta, image, cfg["tile"])[0]
        pred.append(label_cells(p, 0.5, cfg["border"], cfg["min_cell"]))
        ref.append(load_stack(st, labels=True)[0].astype(np.int32))
    return metrics.seg(np.stack(pred), np.stack(ref)), len(pred)


def main():
    rows, merges, curves = [], {}, {}
    for group, name in RUNS.items():
        run = run_dir_of(group)
        if run is None or not (run / "final_metrics.json").exists():
            print(f"{group}: not finished")
            continue
        if not (run / "latest.npz").exists():
            print(f"{group}: only its logs are here ({run}): rerun it for the frame figures")
            continue
        cfg = json.loads((run / "config.json").read_text())
        images, inst, names, _ = load_ctc(CTC_DIR / name)
        val = parse_slices(cfg["data"]["val_slices"], len(images))
        trained = [names[i] for i in parse_slices(cfg["data"]["train_slices"], len(images))]
        model, meta = model_from_checkpoint(run / "latest.npz")
        probs = probabilities(model, meta, images[val], cfg["tile"])
        by_t = {t: metrics.seg(np.stack([label_cells(p, t, cfg["border"], cfg["min_cell"])
                                         for p in probs]), inst[val])["seg"]
                for t in THRESHOLDS}
        cells = [label_cells(p, 0.5, cfg["border"], cfg["min_cell"]) for p in probs]
        for i, c, p in zip(val, cells, probs):
            r = metrics.seg(c, inst[i])
            ms = metrics.merged_and_split_cells(c, inst[i])[0]
            rows.append(f"| {group} | {cfg['weighting']} | {names[i]} | {r['seg']:.4f} | "
                        f"{r['reference']} | {r['predicted']} | {ms['merges']} | "
                        f"{ms['splits']} |")
        silver, n = silver_scores(model, meta, cfg, name, trained)
        rows.append(f"| {group} | {cfg['weighting']} | validation frames | "
                    f"{metrics.seg(np.stack(cells), inst[val])['seg']:.4f} | | | | | "
                    f"thresholds {', '.join(f'{t}: {s:.4f}' for t, s in by_t.items())}; "
                    f"silver truth of the {n} frames without a reference: SEG "
                    f"{silver['seg']:.4f}, F1 {silver['f1']:.3f} |")
        if name == "DIC-C2DH-HeLa":
            merges[cfg["weighting"]] = (images[val[0]], cells[0], inst[val[0]], names[val[0]])
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        curves[group] = [(r["step"], r["val"]["seg"]) for r in log if "val" in r]
    text = ("| run | weighting | frame | SEG (last checkpoint) | cells | found | merged | split "
            "| |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cells_frames.md").write_text(text)
    print(text)
    from matplotlib.figure import Figure
    if merges:
        from tinyunet.plots import instance_colours
        order = [w for w in ("paper", "balanced", "none") if w in merges]
        fig = Figure(figsize=(5 * len(order), 5.4))
        ax = np.atleast_1d(fig.subplots(1, len(order)))
        for a, w in zip(ax, order):
            image, pred, ref, frame = merges[w]
            ms = metrics.merged_and_split_cells(pred, ref)[0]
            rgb = 0.5 * instance_colours(pred) + 0.5 * (image / image.max())[..., None]
            merged = np.isin(ref, ms["merged"]) & (ref > 0)
            rgb[merged & ~ndi.binary_erosion(merged, iterations=2)] = (1, 0, 0)
            a.imshow(rgb)
            a.set_title(f"weighting {w}: {ms['merges']} merged, {ms['splits']} split\n"
                        f"(frame {frame}; merged reference cells outlined red)", fontsize=9)
            a.axis("off")
        fig.tight_layout()
        fig.savefig(FIGURES / "cells_merges.png", dpi=100)
    if curves:
        fig = Figure(figsize=(7, 4))
        a = fig.subplots()
        for group, c in curves.items():
            a.plot(*zip(*c), "o-", label=group, ms=3)
        a.set(xlabel="step", ylabel="validation SEG (averaged weights)", ylim=(0, 1))
        a.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(FIGURES / "cells_curves.png", dpi=110)


if __name__ == "__main__":
    main()
