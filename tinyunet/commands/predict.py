"""Segment an image, a stack or a whole volume with a trained checkpoint: P(cell) per pixel.

    python examples/predict.py runs/<run>/best.npz ../shared/data/isbi2012/test-volume.tif --tta
    python examples/predict.py best.npz image.png --out pred --tile 572 --device gpu
    python examples/predict.py best.npz volume.zarr                     # blockwise, with dask
    python examples/predict.py best.npz volume.zarr --scheduler tcp://10.0.0.5:8786 --chunk 1,1024,1024

An image or a TIFF stack that fits the memory budget is segmented in memory and written as
OUT/<name>_prob.tif (float32, P(cell) per slice) with OUT/<name>_overlay.png (the first slice,
predicted membranes in red). A zarr store, a TIFF larger than the budget, or --chunk,
--scheduler or --format zarr go through tinyunet.volume.predict_volume (dask, block by block;
pip install 'tinyunet[volume]') into OUT/<name>_prob.zarr.

OUT is the folder `predictions` beside the checkpoint (runs/<run>/predictions: ignored by git,
like the run). Existing outputs are kept unless --overwrite. By default the tile is the largest
valid one whose forward pass fits --memory (and no larger than the image needs); --tile picks
one. Every argument is checked before anything is written; a mistake prints one line
`error: ...` and exits with status 2 (--debug shows the traceback).
"""
import sys
import time
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, model_from_checkpoint, trained_on
from ..cli import ArgumentParser, at_least, block_shape, device, memory_size
from ..data import load_stack, normalise
from ..errors import UserError
from ..files import check_writable
from ..infer import choose_tile, covering_tile, predict_tiled
from ..model import check_input_size

HINT = "give the best.npz or latest.npz of a training run (runs/<run>/best.npz)"


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .npz checkpoint from examples/train_isbi.py")
    ap.add_argument("image", help="an image (PNG/TIFF), a multi-page TIFF or a zarr store")
    ap.add_argument("--out", help="output folder (default: predictions/ beside the checkpoint)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ap.add_argument("--tile", type=int,
                    help="input tile size (default: the largest that fits --memory)")
    ap.add_argument("--memory", type=memory_size, default="2G",
                    help="memory budget of one forward pass, which picks the tile and the "
                         "blocks (default 2G)")
    ap.add_argument("--batch", type=at_least(1), default=1, help="tiles per forward pass")
    ap.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations")
    ap.add_argument("--device", default=None, help="cpu or gpu")
    ap.add_argument("--format", choices=("auto", "tif", "zarr"), default="auto",
                    help="output: tif, zarr, or auto (zarr for volumes, else tif)")
    ap.add_argument("--chunk", type=block_shape,
                    help="Z,Y,X voxels per block for predict_volume (default: from the tile)")
    ap.add_argument("--scheduler", help="a dask.distributed scheduler address, e.g. "
                                        "tcp://10.0.0.5:8786 (default: this machine)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def main(argv=None):
    from ..volume import is_zarr
    args = build_parser().parse_args(argv)
    # ---- every argument is checked before anything is written -------------------------------
    try:
        model, meta = model_from_checkpoint(args.checkpoint, device(args.device))
    except CheckpointError as e:
        raise UserError(f"{e}: {HINT}") from None
    if args.tile is not None:
        try:
            check_input_size(args.tile, model.depth, "--tile")
        except ValueError as e:
            raise UserError(str(e)) from None
    source = Path(args.image)
    if not source.exists():
        raise UserError(f"no such image: {source}")
    if source.is_dir() and not is_zarr(source):
        raise UserError(f"{source} is a folder: give an image (PNG, TIFF), a TIFF stack or a "
                        f"zarr store")
    big_tiff = source.is_file() and source.suffix.lower() in (".tif", ".tiff") and \
        4 * source.stat().st_size > args.memory
    blockwise = (is_zarr(source) or big_tiff or args.format == "zarr" or args.chunk is not None
                 or args.scheduler is not None)
    fmt = args.format if args.format != "auto" else ("zarr" if blockwise else "tif")
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "predictions"
    name = source.name.split(".")[0] or "prediction"
    targets = [out / f"{name}_prob.{fmt}"] + ([out / f"{name}_overlay.png"]
                                             if not blockwise else [])
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{', '.join(existing)} exists: choose another --out, or pass "
                        f"--overwrite to replace it")
    try:
        check_writable(out)
    except ValueError as e:
        raise UserError(str(e)) from None
    if trained_on(meta, args.checkpoint) == "synthetic":
        print(f"warning: {args.checkpoint} was trained on the built-in synthetic EM set, not on "
              f"real EM images: its predictions on real data mean little", file=sys.stderr)
    if blockwise:
        return predict_blockwise(model, meta, source, out, targets[0], fmt, args)
    return predict_in_memory(model, meta, source, out, targets, args)


def predict_in_memory(model, meta, source, out, targets, args):
    """An image or a stack, slice by slice: <name>_prob.tif and the overlay of the first."""
    from ..plots import plot_overlay
    try:
        stack = load_stack(source)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UserError(f"{source} is not an image tinyunet can read (PNG, JPEG or TIFF): "
                        f"{type(e).__name__}: {e}") from None
    h, w = stack.shape[1:]
    try:
        tile = args.tile or choose_tile(model, args.memory, args.batch,
                                        covering_tile(max(h, w), model.depth))
    except ValueError as e:
        raise UserError(f"{e}: raise --memory or give a --tile") from None
    x = normalise(stack, meta["mean"], meta["std"])
    probs, times = [], []
    for k, img in enumerate(x):
        t0 = time.perf_counter()
        probs.append(predict_tiled(model, img, tile=tile, batch=args.batch, tta=args.tta,
                                   channel=1))
        times.append(time.perf_counter() - t0)
        print(f"slice {k + 1}/{len(x)}: {times[-1]:.2f} s", flush=True)
    probs = np.stack(probs).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    import tifffile
    tifffile.imwrite(targets[0], probs, photometric="minisblack")
    plot_overlay(stack[0], probs[0], targets[1])
    print(f"wrote {targets[0]} and {targets[1]}; {np.median(times):.2f} s per {h}x{w} slice "
          f"(median, tile {tile}, {'TTA, ' if args.tta else ''}{model.device})")


def predict_blockwise(model, meta, source, out, target, fmt, args):
    """A volume through predict_volume: lazily, block by block, on this machine or a cluster."""
    from ..volume import open_volume, predict_volume, save_volume
    try:
        arr = open_volume(source)
    except (ImportError, ValueError) as e:              # dask or zarr missing; not a volume
        raise UserError(str(e)) from None
    client = None
    if args.scheduler:
        from distributed import Client
        try:
            client = Client(args.scheduler, timeout=10)
        except (OSError, TimeoutError, ValueError) as e:
            raise UserError(f"cannot reach the dask scheduler at {args.scheduler}: {e}") from None
    try:
        import dask.array as da
        volume = da.from_array(arr) if arr.ndim == 3 else da.from_array(arr)[None]
        try:
            prob = predict_volume(model, volume, tile=args.tile, chunks=args.chunk,
                                  memory=args.memory, tta=args.tta, mean=meta["mean"],
                                  std=meta["std"], batch=args.batch)
        except ValueError as e:
            hint = ": raise --memory or give a --tile" if "memory budget" in str(e) else ""
            raise UserError(f"{source}: {e}{hint}") from None
        z, h, w = prob.shape
        print(f"{source}: {z} x {h} x {w} voxels in blocks of {prob.chunksize}"
              f"{f' on {args.scheduler}' if client else ''}", flush=True)
        t0 = time.perf_counter()
        if fmt == "zarr":
            save_volume(prob, target, overwrite=args.overwrite)
        else:
            out.mkdir(parents=True, exist_ok=True)
            import tifffile
            tifffile.imwrite(target, prob.compute(), photometric="minisblack")
        dt = time.perf_counter() - t0
        print(f"wrote {target}; {z * h * w / dt:,.0f} voxels/s ({dt:.1f} s, "
              f"{'TTA, ' if args.tta else ''}{model.device})")
    finally:
        if client is not None:
            client.close()
