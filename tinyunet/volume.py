"""Overlap-tile inference over volumes larger than memory: dask runs it block by block.

A volume (Z, Y, X) is cut into blocks of (z, cy, cx) voxels (the chunks). Each block is
segmented slice by slice with the network's overlap-tile strategy (paper sec. 2, fig. 2) and
gets, as context, a halo of its neighbours' pixels: `dask.array.overlap` copies them in, and
at the volume's border the block mirrors the image itself, as `predict_tiled` does.

The halo comes from the network's geometry. A tile of T px gives O = T - 2m output px, so an
output pixel needs m px of context on each side. Pooling 2^depth = a makes the network
shift-equivariant only by multiples of a: every tile must sit on the grid of multiples of a
that predict_tiled uses over the whole (mirrored, maybe flipped for TTA) image, or it computes
other numbers. The tiles inside a block are therefore placed on that global grid, which starts
up to a - 1 px before the block (and, for the flipped TTA passes, the grid is counted from the
far border). So the halo is m + a - 1 px, and in exchange the block grid is free: any chunking
of at least the halo gives predict_tiled's numbers, whether or not it divides the image.

Blocks are independent, so dask runs them on its threads, or on the workers of a
dask.distributed cluster (a Client being active is enough); the model is one node of the task
graph, sent to each worker once, not with every block.

Needs the optional packages dask and zarr: pip install 'tinyunet[volume]'.
"""
import threading
import uuid
from pathlib import Path

import numpy as np

from .data.images import check_finite, normalise
from .files import check_writable
from .infer import SYMMETRIES, choose_tile, covering_tile, mirror_pad, run_tiles
from .model import check_input_size, margin, output_size, valid_input_sizes

INSTALL = "pip install 'tinyunet[volume]' (or: pip install 'dask[distributed]' zarr)"
# One forward pass at a time per process: the model keeps its activations and scratch buffers
# on itself, and each pass already uses every core (Numba/BLAS threads).
_MODEL_LOCK = threading.Lock()


def _dask():
    try:
        import dask.array as da
    except ImportError:
        raise ImportError(f"predict_volume needs dask: {INSTALL}") from None
    return da


def halo(model, tile):
    """Context px a block needs on each side: the tile's margin m plus 2^depth - 1 px, so that
    its tiles can sit on the global grid of multiples of 2^depth (see the module docstring)."""
    return margin(tile, model.depth) + 2 ** model.depth - 1


def _axis_chunks(size, chunk, minimum):
    """Chunk sizes along one axis: `chunk` repeated, a remainder smaller than `minimum` merged
    into the chunk before it (dask would otherwise rechunk to fit the halo)."""
    sizes = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
    if len(sizes) > 1 and sizes[-1] < minimum:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return tuple(sizes)


def default_chunks(model, tile):
    """(1, c, c): one slice, and c the largest multiple of 2^depth that one tile of `tile`
    covers from any grid position (O - (2^depth - 1)), at least the halo."""
    a = 2 ** model.depth
    out = output_size(tile, model.depth)
    c = max(((out - a + 1) // a) * a, a)
    return 1, max(c, halo(model, tile)), max(c, halo(model, tile))


def _aligned_origins(r0, r1, out, a):
    """Output origins of tiles with `out` px outputs that cover [r0, r1), on the grid of
    multiples of a: from the grid point at or before r0 to the last one as far back as it can
    be (overlapping tiles hold equal values)."""
    first = (r0 // a) * a
    last = max(first, -(-(r1 - out) // a) * a)
    return list(range(first, last, (out // a) * a)) + [last]


def _block_tile(need, tile, depth):
    """The tile for an axis whose tiles must cover `need` px from their first grid point:
    `tile`, or the smallest valid size that covers `need` in one tile if that is smaller."""
    for t in valid_input_sizes(depth, tile):
        if output_size(t, depth) >= need:
            return t
    return tile


def _predict_block(block, model, chunks, shape, tile, h, tta, mean, std, dtype, batch,
                   block_id=None):
    """P(class 1) (z, cy, cx) for one block (dask calls it with the block's index).

    block (z, Y', X'): the chunk plus up to h px of its neighbours on each side, none at the
    volume's border, where the block mirrors the image itself instead."""
    spans, pads = [], []
    for ax in (1, 2):                              # y, x
        i = block_id[ax]
        r0, n, length = sum(chunks[ax][:i]), chunks[ax][i], shape[ax]
        got = (min(h, r0), min(h, length - r0 - n))          # what dask's overlap gave
        # a block spanning the axis mirrors the whole image (np.pad reflects again past the
        # far edge, as mirror_pad does in predict_tiled); extra room for one small tile
        want = h if n < length else h + output_size(valid_input_sizes(model.depth)[0],
                                                    model.depth)
        pads.append((want - got[0], want - got[1]))
        spans.append((r0, n, length, want))
    x = np.asarray(block)
    check_finite(x, f"the volume's block at {tuple(sum(c[:i]) for c, i in zip(chunks, block_id))}",
                 "voxels")
    if mean is not None:                           # raw grey values: scaled by their dtype
        x = normalise(x, mean, std)
    x = mirror_pad(np.asarray(x, model.dtype), *pads[0], *pads[1])
    out = np.empty((x.shape[0], spans[0][1], spans[1][1]), dtype)
    for k in range(x.shape[0]):
        acc = 0
        for symmetry in SYMMETRIES if tta else SYMMETRIES[:1]:
            acc = acc + _predict_pass(model, x[k], spans, tile, batch, *symmetry)
        p = acc / 8 if tta else acc
        out[k] = np.rint(p * 255) if out.dtype == np.uint8 else p
    return out


def _predict_pass(model, x, spans, tile, batch, transpose, flip_y, flip_x):
    """P(class 1) over one block of one slice under one of infer.SYMMETRIES (flips, then the
    transpose): predict_tiled's pass over the transformed image, restricted to the block.

    x (want_y + cy + want_y, want_x + cx + want_x): the block with its context; spans: per axis
    (first output px, size, axis length, context px on each side)."""
    a, m = 2 ** model.depth, margin(tile, model.depth)
    t, axes = x, []
    for ax, flip in ((0, flip_y), (1, flip_x)):
        r0, n, length, want = spans[ax]
        if flip:                                   # a flipped image counts from the far border
            t, r0 = np.flip(t, ax), length - r0 - n
        axes.append((r0, n, want))
    if transpose:
        t, axes = t.T, axes[::-1]
    # per axis: tiles on the grid of multiples of a; t's index 0 is image coordinate r0 - want,
    # and output pixel r reads its input from r - m (the margin m is the same for all tiles)
    tiles, origins = [], []
    for r0, n, want in axes:
        tl = _block_tile(r0 + n - (r0 // a) * a, tile, model.depth)
        out = output_size(tl, model.depth)
        tiles.append(tl)
        origins.append([o - m - (r0 - want) for o in _aligned_origins(r0, r0 + n, out, a)])
    probs = np.empty((1,) + t.shape, np.result_type(model.dtype))        # P(class 1) only
    with _MODEL_LOCK:
        run_tiles(model, np.ascontiguousarray(t)[None], origins[0], origins[1], tuple(tiles),
                  probs, batch, channels=[1])
    # run_tiles writes output pixel r at t's index of its input origin, r - m - (r0 - want)
    (ry, ny, wy), (rx, nx, wx) = axes
    p = probs[0, wy - m:wy - m + ny, wx - m:wx - m + nx]
    if transpose:
        p = p.T
    if flip_x:
        p = p[:, ::-1]
    if flip_y:
        p = p[::-1]
    return p


def predict_volume(model, volume, tile=None, chunks=None, memory=2 * 2**30, tta=False,
                   mean=None, std=None, dtype="float32", batch=1):
    """P(class 1) (Z, Y, X), lazily, as a dask array: predict_tiled's numbers, block by block.

    volume: (Z, Y, X), a dask array or anything dask.array.from_array takes (NumPy, zarr, a
    memory-mapped or tifffile-backed stack). mean, std: if given, the volume holds raw grey
    values (integers are scaled by their type's range first, as tinyunet.data.grey_range does),
    normalised per block as tinyunet.data.normalise does (the checkpoint's values); otherwise it
    is already normalised. tile: the input tile size (default: the largest
    that fits `memory` bytes, see choose_tile); chunks: (z, y, x) voxels per block (default:
    one slice, y and x what one tile covers; at least halo(model, tile) in y and x unless a
    chunk spans its axis). dtype: "float32", "float64" or "uint8" (P x 255, rounded).
    tta: average over the 8 flips/rotations, as predict_tiled(tta=True).

    Compute it with .compute() (small volumes) or write it with save_volume; both run on dask's
    threads, or on a dask.distributed cluster when a Client is active.
    """
    da = _dask()
    import dask
    vol = volume if isinstance(volume, da.Array) else da.from_array(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (Z, Y, X), got {vol.ndim}-D of shape "
                         f"{tuple(vol.shape)}: for one image use predict_tiled, or add an axis "
                         f"(image[None])")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (the checkpoint's normalisation) or neither")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64, np.uint8):
        raise ValueError(f"dtype must be float32, float64 or uint8, got {dtype}")
    _, ny, nx = vol.shape
    if tile is None:
        tile = choose_tile(model, memory, batch, covering_tile(max(ny, nx), model.depth))
    check_input_size(tile, model.depth, "tile size")
    h = halo(model, tile)
    cz, cy, cx = chunks if chunks is not None else default_chunks(model, tile)
    for name, c, length in (("y", cy, ny), ("x", cx, nx)):
        if c < 1 or cz < 1:
            raise ValueError(f"chunks must be positive, got {(cz, cy, cx)}")
        if c < h and c < length:
            raise ValueError(f"chunk of {c} px in {name} is smaller than the halo of {h} px "
                             f"that a tile of {tile} needs (margin "
                             f"{h - 2 ** model.depth + 1} + 2^depth - 1): use chunks of at "
                             f"least {h} px, or {length} to span the axis")
    vol = vol.rechunk((cz, _axis_chunks(ny, cy, h), _axis_chunks(nx, cx, h)))
    depth = {0: 0, 1: h if len(vol.chunks[1]) > 1 else 0, 2: h if len(vol.chunks[2]) > 1 else 0}
    ov = da.overlap.overlap(vol, depth=depth, boundary="none")
    # one graph node holds the model: a cluster ships it to each worker once, not per block
    # (a fresh name each call: weights change between calls, and hashing 31M of them is slow)
    node = dask.delayed(model, name=f"unet-{uuid.uuid4().hex}")
    return da.map_blocks(_predict_block, ov, node, vol.chunks, vol.shape, tile, h, tta, mean,
                         std, dtype, batch, chunks=vol.chunks, dtype=dtype,
                         name=f"predict-volume-{node.key[5:]}",
                         meta=np.empty((0, 0, 0), dtype))


def save_volume(prob, path, overwrite=False, progress=True):
    """Compute the dask array `prob` into a zarr store at `path`, block by block, with a
    progress bar; on dask's threads, or on the cluster of an active dask.distributed Client.

    A store that exists is kept unless overwrite=True; a folder that cannot be written is a
    ValueError that names it, before anything is computed."""
    da = _dask()
    try:
        import zarr  # noqa: F401
    except ImportError:
        raise ImportError(f"writing zarr needs zarr: {INSTALL}") from None
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists: choose another output or overwrite it (overwrite=True, "
                         f"--overwrite)")
    check_writable(path.parent)
    # zarr wants regular chunks: split a merged last block (see _axis_chunks) at the chunk size
    prob = prob.rechunk(tuple(c[0] for c in prob.chunks))
    store = da.to_zarr(prob, str(path), overwrite=overwrite, compute=False)
    _compute(store, progress)
    return path


def _compute(x, progress):
    """Compute a dask collection with a progress bar fitting the scheduler in use."""
    client = None
    try:
        from distributed import default_client
        client = default_client()
    except (ImportError, ValueError):              # no distributed, or no Client active
        pass
    if client is not None:
        future = client.compute(x)
        if progress:
            from distributed import progress as bar
            bar(future)
        return future.result()
    if not progress:
        return x.compute()
    from dask.diagnostics import ProgressBar
    with ProgressBar(minimum=1.0):
        return x.compute()


def open_volume(path):
    """A zarr array, or a TIFF stack through tifffile's zarr view, opened lazily for
    predict_volume: (Z, Y, X) or (Y, X). A ValueError says what `path` is instead."""
    try:
        import dask.array  # noqa: F401
        import zarr
    except ImportError:
        raise ImportError(f"{path} is segmented block by block with dask and zarr, which are "
                          f"not installed: {INSTALL}") from None
    path = Path(path)
    axes = ""
    try:
        if path.is_dir():
            arr = zarr.open(str(path), mode="r")
        else:
            import tifffile
            with tifffile.TiffFile(path) as tif:
                axes = tif.series[0].axes
            # tifffile's zarr view of the file; the file stays open while dask reads blocks
            arr = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except Exception as e:                   # zarr/tifffile raise many kinds for a bad store
        raise ValueError(f"{path} is not a zarr array or a TIFF stack that can be read "
                         f"({type(e).__name__}: {e})") from None
    if "S" in axes:
        raise ValueError(f"{path} is a colour TIFF (axes {axes}): blockwise prediction takes "
                         f"grey volumes; save it as grey first")
    if not hasattr(arr, "shape"):            # a zarr group
        names = [k for k, _ in arr.arrays()]
        raise ValueError(f"{path} is a zarr group: give one of its arrays, e.g. "
                         f"{path / names[0] if names else path / '<array>'}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2-D image or a stack (Z, Y, X), got shape "
                         f"{arr.shape}")
    return arr


def is_zarr(path):
    """True for a folder that is a zarr store (v2 or v3)."""
    path = Path(path)
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray",
                                                               ".zgroup"))
