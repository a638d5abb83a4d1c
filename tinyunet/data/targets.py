"""What the network learns from a label image: its classes and its loss weights (paper sec. 3).

Two kinds of labels:

    membranes   the ISBI 2012 convention: 255 = cell interior (class 1), 0 = membrane (class 0).
                The cells of the weight map are the 4-connected components of the interior.
    instances   one integer per cell (1, 2, ...; more than 255 of them is fine), 0 = background,
                -1 = a cell that nobody annotated (a partial reference frame: data/ctc.py). Cells
                become class 1, except where two different cells touch or nearly touch: those
                pixels, the separation border, become background (class 0), so that the
                connected components of a prediction are the cells (paper sec. 3: "the
                separation border is computed using morphological operations").

The separation border of width b: a cell pixel whose disc of radius b holds a pixel of another
cell. So two touching cells are cut apart by a band 2b px wide (b px from each), cells 1 px
apart by a band 2(b - 1) px wide around their gap, and so on; cells b or more px apart lose
nothing. b = 2 px by default: touching cells come apart by a 4-px band.

The weight map (eq. 2) of instance labels is computed on the cells as the target has them
(after the separation borders): d1 and d2 are the distances to the two nearest *cells*, so the
border pixels between two touching cells, now background, get the large weight the paper gives
them. Unannotated cells (-1) get weight 0: they are neither background nor a cell to learn, and
the loss does not count them.
"""
import numpy as np

from ..instances import BORDER, separation_border
from ..kernels.weight_map import class_weight_map, instances_from_mask, weight_map
from .images import labels_to_classes

LABEL_KINDS = ("membranes", "instances")
WEIGHTINGS = ("paper", "balanced", "none")         # eq. 2; the class balance w_c alone; none


def instance_classes(instances, width=BORDER):
    """Classes (uint8, H x W) of instance labels: 1 on cells, 0 on background, on separation
    borders and on unannotated cells (which the weights leave out)."""
    inst = np.asarray(instances)
    return ((inst > 0) & ~separation_border(inst, width)).astype(np.uint8)


def targets(labels, kind="membranes", weighting="paper", w0=10.0, sigma=5.0, border=BORDER):
    """(classes uint8, weights float32), each (N, H, W), for label images of `kind`.

    weighting: "paper" (eq. 2: the balanced w_c plus the border term), "balanced" (w_c alone)
    or "none" (ones; unannotated cells still 0)."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"labels must be one of {LABEL_KINDS}, got {kind!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    classes, weights = [], []
    for lab in labels:
        if kind == "membranes":
            c = labels_to_classes(lab)
            cells = instances_from_mask(lab, foreground=255)
            known = None
        else:
            c = instance_classes(lab, border)
            cells = np.where(c > 0, lab, 0).astype(np.int32)     # the cells as the target has them
            known = np.asarray(lab) >= 0
        if weighting == "paper":
            w = weight_map(cells, w0=w0, sigma=sigma)
        else:
            w = class_weight_map(cells, "balanced" if weighting == "balanced" else None)
        if known is not None:
            w = np.where(known, w, 0).astype(np.float32)
        classes.append(c)
        weights.append(w)
    return np.stack(classes), np.stack(weights)
