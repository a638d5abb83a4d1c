"""Cells as instance labels (one id per cell): the separation border between touching cells,
which the training targets cut out (paper sec. 3: "the separation border is computed using
morphological operations"), and the cells found again in a probability map, the border given
back. Training (data/targets.py) and inference (label_cells) read the same rule here.
"""
import numpy as np
from scipy import ndimage as ndi

BORDER = 2                      # px: the separation border's default width
THRESHOLD = 0.5                 # P(cell) above which a pixel is a cell's, where a run sets none


def _disc(radius):
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy ** 2 + xx ** 2 <= radius ** 2


def separation_border(instances, width=BORDER):
    """Cell pixels (bool, H x W) within `width` px of a pixel of another cell."""
    inst = np.asarray(instances)
    if width <= 0:
        return np.zeros(inst.shape, bool)
    cells = np.where(inst > 0, inst, 0).astype(np.int64)
    disc = _disc(width)
    high = ndi.grey_dilation(cells, footprint=disc, mode="constant", cval=0)
    # the smallest cell id around, background (and outside the image) counted as larger than
    # every cell (a sentinel that survives scipy's cval, a float)
    above = int(cells.max(initial=0)) + 1
    low = ndi.grey_erosion(np.where(cells > 0, cells, above), footprint=disc, mode="constant",
                           cval=above)
    return (cells > 0) & ((high > cells) | (low < cells))


def cell_options(meta):
    """(border, min_cell, threshold) of label_cells for a checkpoint's model: a shipped model's
    card ("instances" of its provenance: the threshold may have been chosen after training,
    tinyunet ship --threshold), else its run's settings (the separation border it learnt; the
    specks it drops; the P(cell) above which a pixel is a cell's), THRESHOLD for a run older
    than the setting."""
    recipe = meta.get("train_config") or {}
    card = (meta.get("provenance") or {}).get("instances") or {}
    return (card.get("border", recipe.get("border", BORDER)),
            card.get("min_cell", recipe.get("min_cell", 0)),
            card.get("threshold", recipe.get("threshold", THRESHOLD)))


def recipe(meta):
    """How tinyunet makes cells from a checkpoint's P(cell) (label_cells with its card's or its
    run's settings: cell_options), for an exported package, which holds only the network; None
    for a model not trained on instance masks."""
    if (meta.get("train_config") or {}).get("labels") != "instances":
        return None
    border, min_cell, threshold = cell_options(meta)
    return dict(function="tinyunet.instances.label_cells", threshold=threshold, connectivity=4,
                min_cell=min_cell, border=border)


def cell_probabilities(model, meta, images, tta=False):
    """P(cell) of each frame (class 1's probability), normalised and tiled as the checkpoint's
    run validated (`meta`: the checkpoint's: its mean, std and train_config's tile)."""
    from .data import normalise
    from .infer import predict_tiled
    tile = meta["train_config"]["tile"]
    return [predict_tiled(model, x, tile=tile, channel=1, tta=tta)
            for x in normalise(images, meta["mean"], meta["std"])]


def label_cells(prob, threshold=THRESHOLD, grow=BORDER, min_pixels=0):
    """Cells (int32 instance labels, H x W) from a map of P(cell): the 4-connected components of
    prob > threshold, those smaller than `min_pixels` dropped; then the separation borders given
    back: a background pixel within `grow` px of a cell, whose neighbourhood of radius `grow`
    also holds another cell, goes to its nearest cell. The band between two cells that the
    targets cut out (separation_border) is filled again, and a cell's outer boundary, which the
    targets leave alone, does not move."""
    four = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    cells, n = ndi.label(np.asarray(prob) > threshold, structure=four)
    if min_pixels > 1 and n:
        small = np.bincount(cells.ravel()) < min_pixels
        small[0] = False
        cells[small[cells]] = 0
        cells, n = ndi.label(cells > 0, structure=four)
    if grow > 0 and n > 1:
        dist, (iy, ix) = ndi.distance_transform_edt(cells == 0, return_indices=True)
        nearest = np.where(dist <= grow, cells[iy, ix], 0)
        between = separation_border(nearest, grow) & (cells == 0)
        cells = np.where(between, nearest, cells)
    return cells.astype(np.int32)
