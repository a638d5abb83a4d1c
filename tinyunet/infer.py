"""Overlap-tile inference (paper sec. 2, fig. 2): segment images of any size, seamlessly.

Each output tile of O x O pixels needs an input tile of T x T (T = O + 2m, m the margin lost to
the valid convolutions). The image is extended by mirroring, so the border pixels get mirrored
context. Because the network pools 2x2 `depth` times, it is shift-equivariant only for shifts
that are multiples of 2^depth (16 for the paper's network); the tiles therefore step by the
largest multiple of 16 that fits in O (overlapping by O mod 16 px), and every tile sees its
input at the alignment it would have in one pass over the whole mirrored image. So the result
equals that single pass up to float rounding, whatever the tile size: no seams.

`choose_tile` picks the largest valid tile whose forward pass fits a memory budget
(`forward_memory` estimates it from the model's configuration). tinyunet.volume runs the same
tiling blockwise over volumes larger than memory (with dask); it builds on this module, which
imports nothing of it. Inference takes any model with the UNet's `predict_proba`, `depth`,
`dtype`, `device` and `config`, and imports nothing from training.
"""
import math

import numpy as np

from . import backend
from .model import (check_input_size, is_skip, layers, margin, output_size, valid_input_sizes,
                    walk)

# The 8 symmetries of the square (test-time augmentation), each as (transpose, flip y, flip x),
# applied as flips first, then the transpose: the rotations by k * 90 degrees, each unflipped
# and then flipped left-right (np.rot90(a, k), then a[:, ::-1]).
SYMMETRIES = [(False, False, False), (False, False, True), (True, False, True),
              (True, True, True), (False, True, True), (False, True, False),
              (True, True, False), (True, False, False)]


def transform(a, symmetry):
    """The last two axes of `a` under one of SYMMETRIES (a view)."""
    transpose, flip_y, flip_x = symmetry
    if flip_y:
        a = a[..., ::-1, :]
    if flip_x:
        a = a[..., :, ::-1]
    return a.swapaxes(-1, -2) if transpose else a


def untransform(a, symmetry):
    """The inverse of transform(., symmetry) (a view)."""
    transpose, flip_y, flip_x = symmetry
    if transpose:
        a = a.swapaxes(-1, -2)
    if flip_x:
        a = a[..., :, ::-1]
    return a[..., ::-1, :] if flip_y else a


def mirror_pad(image, top, bottom, left, right):
    """Extend (C, H, W) by mirroring about the edge pixels (... x2 x1 | x0 x1 x2 ...), as the
    paper does for the missing context; pads larger than the image reflect again."""
    return np.pad(image, ((0, 0), (top, bottom), (left, right)), mode="reflect")


def _as_chw(image):
    image = backend.to_numpy(image)         # the tiles are cut on the host: a CuPy image too
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


def _prob_dtype(model):
    return np.float64 if model.dtype == np.float64 else np.float32


def run_tiles(model, padded, ys, xs, tile, result, batch=1, progress=False, channels=None):
    """Run the network on the tiles of `padded` (C, H, W) at input origins ys x xs, each
    tile = (tile_h, tile_w) px, and write each tile's output (K, O_h, O_w) into `result`
    (K, ., .) at the same origins (output pixel (y, x) <- input window from (y, x)).
    Where tiles overlap they hold equal values (the origins are aligned to 2^depth).
    channels: a list of classes; only their maps are copied back from the device (and
    `result` holds only them)."""
    th, tw = tile
    oh, ow = output_size(th, model.depth), output_size(tw, model.depth)
    origins = [(y, x) for y in ys for x in xs]
    bar = range(0, len(origins), batch)
    if progress:
        from tqdm import tqdm
        bar = tqdm(bar, desc="tiles", unit="batch", leave=False)
    for i in bar:
        chunk = origins[i:i + batch]
        x = np.stack([padded[:, y:y + th, x0:x0 + tw] for y, x0 in chunk])  # (B, C, Th, Tw)
        probs = model.predict_proba(backend.to_device(x, model.device))
        probs = backend.to_numpy(probs if channels is None else probs[:, channels])
        for (y, x0), p in zip(chunk, probs):
            result[:, y:y + oh, x0:x0 + ow] = p
    return result


def predict_tiled(model, image, tile=572, batch=1, tta=False, progress=False, channel=None):
    """Class probabilities (K, H, W) for a normalised image (H, W) or (C, H, W) (NumPy, or
    CuPy: it is copied to the host, where the tiles are cut): float32, or float64 for a float64
    model.

    tile: the input tile size (must fit the network, see tinyunet.valid_input_sizes);
    batch: tiles per forward pass; tta: average over the 8 flips/rotations (the paper averaged
    over rotations for ISBI); channel: return only P(class `channel`) (H, W), the only map
    copied back from the device per tile (P(cell) is channel 1); progress: a tqdm bar "tiles"
    over the batches of tiles (one per pass with tta), cleared when done. The model runs in
    evaluation mode on its own device.
    """
    image = _as_chw(image)
    if tta:
        acc = None
        for sym in SYMMETRIES:
            t = np.ascontiguousarray(transform(image, sym))
            p = untransform(predict_tiled(model, t, tile, batch, False, progress, channel), sym)
            acc = p if acc is None else acc + p
        return (acc / 8).astype(_prob_dtype(model))
    m = margin(tile, model.depth)
    out = output_size(tile, model.depth)
    c, h, w = image.shape
    ys, ext_h = tile_grid(h, out, 2 ** model.depth)
    xs, ext_w = tile_grid(w, out, 2 ** model.depth)
    padded = mirror_pad(image.astype(model.dtype), m, m + ext_h - h, m, m + ext_w - w)
    channels = None if channel is None else [channel]
    k = model.config["n_classes"] if channel is None else 1
    result = np.empty((k, ext_h, ext_w), _prob_dtype(model))
    run_tiles(model, padded, ys, xs, (tile, tile), result, batch, progress, channels)
    return result[:, :h, :w] if channel is None else result[0, :h, :w]


def covering_tile(size, depth):
    """The smallest valid input (tile) size whose output covers `size` pixels: one tile per
    image side."""
    s = size
    while output_size(s, depth) is None or output_size(s, depth) < size:
        s += 1
    return s


def predict_whole(model, image):
    """Class probabilities (K, H, W) from ONE forward pass over the whole mirrored image (the
    input is extended to the smallest valid size): float32, or float64 for a float64 model. The
    reference that predict_tiled equals."""
    image = _as_chw(image)
    c, h, w = image.shape
    t, u = covering_tile(h, model.depth), covering_tile(w, model.depth)
    my, mx = margin(t, model.depth), margin(u, model.depth)
    padded = mirror_pad(image.astype(model.dtype), my, t - h - my, mx, u - w - mx)
    probs = model.predict_proba(backend.to_device(padded[None], model.device))
    return backend.to_numpy(probs)[0][:, :h, :w].astype(_prob_dtype(model))


def forward_memory(config, tile, batch=1):
    """An upper estimate, in bytes, of the memory one inference pass (predict_proba) of a U-Net
    with `config` (UNet.config) takes on a batch of tile x tile inputs (parameters not counted).

    At any layer the pass holds the skip maps still to be concatenated, the layer's input, its
    output (twice for a convolution: the GEMM's result and its (N, F, H', W') copy) and one
    scratch buffer as large as the largest im2col matrix so far (9 C_in x H' W', kept by the
    model for the next pass). The estimate adds the skips of all levels, the largest layer and
    the largest im2col matrix: about what the im2col engine (NumPy reference, GPU) takes (0.7 to
    1.25 times, measured). The CPU kernels build no columns and need a third to a quarter of
    it, so on the CPU the budget is kept with room to spare;
    tests/test_volume.py checks that it bounds their peak and grows with the tile as it does.
    """
    depth = config["depth"]
    check_input_size(tile, depth, "tile size")
    itemsize = np.dtype(config.get("dtype", "float32")).itemsize
    net = layers(config["in_channels"], config["n_classes"], config["base_channels"], depth)
    skips, held, cols = [], [], []              # in elements, per image
    for layer, (_, s_in, s) in zip(net, walk(tile, depth)):
        if layer.op == "conv3x3":               # a 3x3 valid conv + ReLU on an s_in x s_in map
            cols.append(9 * layer.c_in * s ** 2)
            held.append(layer.c_in * s_in ** 2 + 2 * layer.c_out * s ** 2)
            if is_skip(layer.name):
                skips.append(layer.c_out * s ** 2)
        elif layer.op == "crop_and_concat":     # the upsampled map and the concatenation
            held.append(2 * layer.c_in * s ** 2 + 2 * layer.c_in * s ** 2)
        elif layer.op == "conv1x1":             # logits, probabilities
            held.append(layer.c_in * s ** 2 + 2 * layer.c_out * s ** 2)
    return int(batch * itemsize * (sum(skips) + max(held) + max(cols)))


def choose_tile(model, memory, batch=1, max_size=None):
    """The largest valid tile size whose forward pass (forward_memory) fits in `memory` bytes.

    max_size: an upper bound, e.g. the smallest tile that covers the whole image (a larger tile
    only computes mirrored border). A ValueError says how much the smallest tile needs when
    even that does not fit.
    """
    limit = max_size or 16384
    sizes = valid_input_sizes(model.depth, max(limit, 1))
    if not sizes:
        sizes = [covering_tile(1, model.depth)]
    fits = [t for t in sizes if forward_memory(model.config, t, batch) <= memory]
    if not fits:
        need = forward_memory(model.config, sizes[0], batch)
        raise ValueError(f"a memory budget of {_bytes(memory)} is too small for this network: "
                         f"its smallest tile ({sizes[0]} px, batch {batch}) needs about "
                         f"{_bytes(need)}")
    return fits[-1]


def _bytes(n):
    """1536 -> '1.5 KiB', to 3 significant digits; 1000 to 1023 of a unit (and beyond 1023
    GiB) in whole units: '1000 B', not '1e+03 B'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            text = f"{n:.3g}"
            return f"{text if 'e' not in text else f'{n:.0f}'} {unit}"
        n /= 1024
