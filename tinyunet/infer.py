"""Overlap-tile inference (paper sec. 2, fig. 2): segment images of any size, seamlessly.

Each output tile of O x O pixels needs an input tile of T x T (T = O + 2m, m the margin lost to
the valid convolutions). The image is extended by mirroring, so the border pixels get mirrored
context. Because the network pools 2x2 `depth` times, it is shift-equivariant only for shifts
that are multiples of 2^depth (16 for the paper's network); the tiles therefore step by the
largest multiple of 16 that fits in O (overlapping by O mod 16 px), and every tile sees its
input at the alignment it would have in one pass over the whole mirrored image. So the result
equals that single pass up to float rounding, whatever the tile size: no seams.
"""
import math

import numpy as np

from . import backend
from .model import check_input_size, output_size


def mirror_pad(image, top, bottom, left, right):
    """Extend (C, H, W) by mirroring about the edge pixels (... x2 x1 | x0 x1 x2 ...), as the
    paper does for the missing context; pads larger than the image reflect again."""
    return np.pad(image, ((0, 0), (top, bottom), (left, right)), mode="reflect")


def _as_chw(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    return image


def tile_grid(size, out, align):
    """Output-tile origins along one axis: a step that is a multiple of `align`, enough tiles to
    cover `size`. Returns (origins, covered extent >= size)."""
    step = (out // align) * align
    if step == 0:
        raise ValueError(f"output tiles of {out} px are smaller than the network's alignment of "
                         f"{align} px: use a larger tile")
    n = 1 + max(0, math.ceil((size - out) / step))
    return [k * step for k in range(n)], (n - 1) * step + out


def predict_tiled(model, image, tile=572, batch=1, tta=False, progress=False):
    """Class probabilities (K, H, W) float32 for a normalised image (H, W) or (C, H, W).

    tile: the input tile size (must fit the network, see tinyunet.valid_input_sizes);
    batch: tiles per forward pass; tta: average over the 8 flips/rotations (the paper averaged
    over rotations for ISBI). The model runs in evaluation mode on its own device.
    """
    image = _as_chw(image)
    if tta:
        acc = None
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(image, k, axes=(1, 2))
                t = t[:, :, ::-1] if flip else t
                p = predict_tiled(model, np.ascontiguousarray(t), tile, batch, False, progress)
                p = p[:, :, ::-1] if flip else p
                p = np.rot90(p, -k, axes=(1, 2))
                acc = p if acc is None else acc + p
        return (acc / 8).astype(np.float32)
    check_input_size(tile, model.depth, "tile size")
    out = output_size(tile, model.depth)
    margin = (tile - out) // 2
    c, h, w = image.shape
    ys, ext_h = tile_grid(h, out, 2 ** model.depth)
    xs, ext_w = tile_grid(w, out, 2 ** model.depth)
    padded = mirror_pad(image.astype(model.dtype), margin, margin + ext_h - h,
                        margin, margin + ext_w - w)
    k = model.config["n_classes"]
    result = np.empty((k, ext_h, ext_w), np.float32)
    origins = [(y, x) for y in ys for x in xs]
    bar = range(0, len(origins), batch)
    if progress:
        from tqdm import tqdm
        bar = tqdm(bar, desc="tiles", unit="batch", leave=False)
    for i in bar:
        chunk = origins[i:i + batch]
        x = np.stack([padded[:, y:y + tile, x0:x0 + tile] for y, x0 in chunk])  # (B, C, T, T)
        probs = backend.to_numpy(model.predict_proba(backend.to_device(x, model.device)))
        for (y, x0), p in zip(chunk, probs):
            result[:, y:y + out, x0:x0 + out] = p     # overlaps hold equal values
    return result[:, :h, :w]


def _covering_input(size, depth):
    """The smallest valid input size whose output covers `size` pixels."""
    s = size
    while output_size(s, depth) is None or output_size(s, depth) < size:
        s += 1
    return s


def predict_whole(model, image):
    """Class probabilities (K, H, W) from ONE forward pass over the whole mirrored image (the
    input is extended to the smallest valid size). The reference that predict_tiled equals."""
    image = _as_chw(image)
    c, h, w = image.shape
    t, u = _covering_input(h, model.depth), _covering_input(w, model.depth)
    my, mx = (t - output_size(t, model.depth)) // 2, (u - output_size(u, model.depth)) // 2
    padded = mirror_pad(image.astype(model.dtype), my, t - h - my, mx, u - w - mx)
    probs = model.predict_proba(backend.to_device(padded[None], model.device))
    return backend.to_numpy(probs)[0][:, :h, :w].astype(np.float32)
