"""A built-in synthetic EM-like data set, so the main job runs on a fresh machine with no download.

Cells are a jittered Voronoi tessellation; the membranes between them are dark bands a few pixels
thick; cells get a grey-value texture and some dark round organelles; the whole image is blurred
and noisy. Labels follow the ISBI convention: 255 = cell interior, 0 = membrane.
"""
import numpy as np
from scipy import ndimage as ndi


def synthetic_em(n=8, size=256, cell_size=28, membrane=3, seed=0):
    """(images, labels): uint8 (n, size, size) each, generated from `seed`."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), np.uint8)
    labels = np.empty((n, size, size), np.uint8)
    for k in range(n):
        images[k], labels[k] = _one_image(rng, size, cell_size, membrane)
    return images, labels


def _one_image(rng, size, cell_size, membrane):
    # jittered grid of seeds -> Voronoi cells via the nearest-seed index of a distance transform
    g = size // cell_size + 2
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    seeds = (np.stack([ys, xs], -1).reshape(-1, 2) - 0.5) * cell_size
    seeds = seeds + rng.uniform(-0.4, 0.4, seeds.shape) * cell_size
    seeds = seeds[(seeds >= 0).all(1) & (seeds < size).all(1)].astype(int)
    marker = np.ones((size, size), bool)
    marker[seeds[:, 0], seeds[:, 1]] = False
    _, (iy, ix) = ndi.distance_transform_edt(marker, return_indices=True)
    cell_id = iy * size + ix                                 # the nearest seed names the cell
    # membranes: pixels within membrane/2 of a cell boundary (a cell id change nearby)
    edge = np.zeros((size, size), bool)
    edge[:-1] |= cell_id[:-1] != cell_id[1:]
    edge[:, :-1] |= cell_id[:, :-1] != cell_id[:, 1:]
    thick = ndi.distance_transform_edt(~edge) < membrane / 2 + rng.uniform(0, 1, (size, size)) * 0.5
    label = np.where(thick, 0, 255).astype(np.uint8)
    # grey values: per-cell brightness + smooth texture, dark membranes, dark organelles
    ids, inverse = np.unique(cell_id, return_inverse=True)
    img = rng.uniform(0.55, 0.8, ids.size)[inverse.reshape(size, size)]
    img += 0.08 * ndi.gaussian_filter(rng.standard_normal((size, size)), 3) * 3
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(size * size // 4000, size * size // 2000 + 1)):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] -= 0.3
    img[thick] = rng.uniform(0.1, 0.25)
    img = ndi.gaussian_filter(img, 1.0) + rng.normal(0, 0.05, (size, size))
    return np.clip(img * 255, 0, 255).astype(np.uint8), label
