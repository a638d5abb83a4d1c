"""What the separation border costs and what it buys, before any training (README.md beside
this file).

    python studies/cells/border.py          # -> border.md (rows merged by set and width)

For each width b: the training targets of every fully annotated reference frame (cells minus
their separation borders, data/targets.py), turned back into cells as a prediction would be
(instances.label_cells: connected components, specks under 100 px dropped, the band grown back by b
px), scored against the reference masks with SEG. A perfect network reaches this score and no
more; b = 0 (no border) shows how many touching cells the plain foreground merges.
"""
import numpy as np

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # studies/study.py
from study import CTC_DIR, Study                                # noqa: E402
from tinyunet import metrics
from tinyunet.data.ctc import load_ctc
from tinyunet.data.targets import instance_classes
from tinyunet.instances import label_cells

WIDTHS = (0, 1, 2, 3, 4)


def main():
    rows = []
    for name in ("DIC-C2DH-HeLa", "PhC-C2DH-U373"):
        _, inst, _, partial, _ = load_ctc(CTC_DIR / name)
        full = inst[[i for i, p in enumerate(partial) if not p]]
        for b in WIDTHS:
            classes = [instance_classes(r, b) for r in full]
            cells = np.stack([label_cells(c.astype(float), 0.5, grow=b, min_pixels=100)
                              for c in classes])
            res = metrics.seg(cells, full)
            merged = sum(m["merges"] for m in metrics.merged_and_split_cells(cells, full))
            band = np.mean([((r > 0) & (c == 0)).sum() / (r > 0).sum()
                            for r, c in zip(full, classes)])
            rows.append(f"| {name} | {b} | {100 * band:.2f} % | {res['seg']:.4f} | {merged} / "
                        f"{res['reference']} |")
    Study(Path(__file__).resolve().parent).write_table(
        "border.md", "| set | border width b (px) | cell pixels in the band | SEG of the targets "
        "made cells again | reference cells merged |\n|---|---|---|---|---|", rows,
        key_columns=(0, 1))


if __name__ == "__main__":
    main()
