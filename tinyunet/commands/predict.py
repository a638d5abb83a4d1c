"""Segment an image, a stack or a whole volume with a trained checkpoint: P(cell) per pixel.

    python examples/predict.py --model isbi2012 ../shared/data/isbi2012/test-volume.tif
    python examples/predict.py runs/<run>/best.npz ../shared/data/isbi2012/test-volume.tif --tta
    python examples/predict.py best.npz image.png --out pred --tile 572 --device gpu
    python examples/predict.py runs/<cells run>/best.npz ../shared/data/ctc/DIC-C2DH-HeLa/01 --instances
    python examples/predict.py best.npz volume.zarr                     # blockwise, with dask
    python examples/predict.py best.npz volume.zarr --scheduler tcp://10.0.0.5:8786 --chunk 1,1024,1024

An image or a TIFF stack that fits the memory budget is segmented in memory and written as
OUT/<name>_prob.tif (float32, P(cell) per slice) with OUT/<name>_overlay.png (the first slice,
predicted membranes in red); a folder of frames gives one OUT/<frame>_prob.tif per frame. With
--instances (a model trained on instance masks) the output is the cells, one id each:
OUT/<name>_labels.tif (uint16), the connected components of P(cell) > --threshold with the
separation borders given back (tinyunet.instances.label_cells). A zarr store, a TIFF larger than the budget, or --chunk,
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
import warnings
from pathlib import Path

import numpy as np

from ..checkpoint import SHIPPED, CheckpointError, load_model, trained_on
from .cli import ArgumentParser, at_least, block_shape, device, memory_size, probability
from ..data import grey_range, load_stack, normalise
from ..data.images import image_files
from ..errors import DataWarning, UserError
from ..files import check_writable
from ..files import write_file as write
from ..infer import choose_tile, covering_tile, predict_tiled
from ..instances import cell_options, label_cells
from ..model import check_input_size

HINT = "give the best.npz or latest.npz of a training run (runs/<run>/best.npz)"


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="a .npz checkpoint from examples/train_isbi.py "
                    "(or give --model)")
    ap.add_argument("image", help="an image (PNG/TIFF), a multi-page TIFF, a folder of frames "
                                  "or a zarr store")
    ap.add_argument("--model", choices=sorted(SHIPPED), help="a model that ships with tinyunet "
                    "instead of a checkpoint: isbi2012 (EM membranes, trained on ISBI 2012 "
                    "slices 0-24)")
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
    cells = ap.add_argument_group("cells (a model trained on instance masks)")
    cells.add_argument("--instances", action="store_true", help="write the cells, one id each "
                       "(<name>_labels.tif, uint16), not P(cell)")
    cells.add_argument("--threshold", type=probability, help="P(cell) above which a pixel is a "
                       "cell (default: the run's --threshold)")
    cells.add_argument("--min-cell", type=at_least(0), help="drop cells smaller than this many "
                       "px (default: the run's --min-cell)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def main(argv=None):
    from ..volume import is_zarr
    args = build_parser().parse_args(argv)
    # ---- every argument is checked before anything is written -------------------------------
    if (args.checkpoint is None) == (args.model is None):
        raise UserError("give a checkpoint or --model NAME, not both (--model: "
                        f"{', '.join(sorted(SHIPPED))})" if args.model else
                        f"give a checkpoint (runs/<run>/best.npz) or --model NAME (one of "
                        f"{', '.join(sorted(SHIPPED))})")
    try:
        model, meta = load_model(args.model or args.checkpoint, device(args.device))
    except CheckpointError as e:
        raise UserError(f"{e}: {HINT}") from None
    checkpoint = SHIPPED[args.model] if args.model else Path(args.checkpoint)
    if args.tile is not None:
        try:
            check_input_size(args.tile, model.depth, "--tile")
        except ValueError as e:
            raise UserError(str(e)) from None
    source = Path(args.image)
    if not source.exists():
        raise UserError(f"no such image: {source}")
    frames = None                                    # a folder of frames: one output each
    if source.is_dir() and not is_zarr(source):
        frames = image_files(source)
        if not frames:
            raise UserError(f"{source} is a folder with no images in it: give an image (PNG, "
                            f"TIFF), a TIFF stack, a folder of frames or a zarr store")
    big_tiff = source.is_file() and source.suffix.lower() in (".tif", ".tiff") and \
        4 * source.stat().st_size > args.memory
    blockwise = frames is None and (is_zarr(source) or big_tiff or args.format == "zarr" or
                                    args.chunk is not None or args.scheduler is not None)
    if args.instances and blockwise:
        raise UserError("--instances labels cells in memory, frame by frame: give an image, a "
                        "stack or a folder of frames, not a volume for blockwise prediction")
    fmt = args.format if args.format != "auto" else ("zarr" if blockwise else "tif")
    # beside the checkpoint's run; for a shipped model, ./predictions
    out = Path(args.out) if args.out else \
        (Path.cwd() if args.model else checkpoint.parent) / "predictions"
    suffix = "labels" if args.instances else "prob"
    names = ([p.name.split(".")[0] for p in frames] if frames
             else [source.name.split(".")[0] or "prediction"])
    targets = [out / f"{n}_{suffix}.{fmt}" for n in names]
    if frames is None and not blockwise:
        targets.append(out / f"{names[0]}_overlay.png")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3
                                           else "")
        raise UserError(f"{shown} exists: choose another --out, or pass --overwrite to replace "
                        f"it")
    try:
        check_writable(out)
    except ValueError as e:
        raise UserError(str(e)) from None
    if trained_on(meta, checkpoint) == "synthetic":
        print(f"warning: {checkpoint} was trained on the built-in synthetic EM set, not on "
              f"real EM images: its predictions on real data mean little", file=sys.stderr)
    if blockwise:
        return predict_blockwise(model, meta, source, out, targets[0], fmt, args)
    return predict_in_memory(model, meta, frames or [source], out, targets, args)


def check_grey_type(path, dtype, meta):
    """A DataWarning when an image's grey values are of another type than the model's training
    images (both are scaled by their type's range, which is right only if they mean the same)."""
    trained = meta.get("image_dtype")
    if trained and np.dtype(dtype) != np.dtype(trained):
        warnings.warn(f"{path} holds {np.dtype(dtype)} grey values, the model was trained on "
                      f"{trained}: both are scaled to [0, 1] by their type's range (/"
                      f"{grey_range(dtype):g} here, /{grey_range(trained):g} in training); "
                      f"check that they mean the same brightness", DataWarning, stacklevel=3)


def _read(path):
    try:
        return load_stack(path)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UserError(f"{path} is not an image tinyunet can read (PNG, JPEG or TIFF): "
                        f"{type(e).__name__}: {e}") from None


def predict_in_memory(model, meta, paths, out, targets, args):
    """Images, stacks or the frames of a folder, slice by slice: P(cell) (<name>_prob.tif) or,
    with --instances, the cells (<name>_labels.tif, uint16), one file per input; the overlay
    of the first slice for a single input."""
    import tifffile

    from ..plots import plot_overlay
    stacks = [_read(p) for p in paths]               # every file is read before one is written
    for path, stack in zip(paths, stacks):
        check_grey_type(path, stack.dtype, meta)
    h, w = max(s.shape[1] for s in stacks), max(s.shape[2] for s in stacks)
    try:
        tile = args.tile or choose_tile(model, args.memory, args.batch,
                                        covering_tile(max(h, w), model.depth))
    except ValueError as e:
        raise UserError(f"{e}: raise --memory or give a --tile") from None
    recipe = meta.get("train_config") or {}
    border, min_cell, threshold = cell_options(meta)
    min_cell = args.min_cell if args.min_cell is not None else min_cell
    threshold = args.threshold if args.threshold is not None else threshold
    if args.instances and recipe.get("labels") != "instances":
        warnings.warn(f"--instances: this model was trained on {recipe.get('labels', 'membrane')}"
                      f" labels, not on instance masks: its cells are the connected regions "
                      f"between predicted membranes, with no separation borders learnt",
                      DataWarning, stacklevel=2)
    times, n = [], sum(len(s) for s in stacks)
    out.mkdir(parents=True, exist_ok=True)
    for stack, target in zip(stacks, targets):
        probs = []
        for img in normalise(stack, meta["mean"], meta["std"]):
            t0 = time.perf_counter()
            probs.append(predict_tiled(model, img, tile=tile, batch=args.batch, tta=args.tta,
                                       channel=1))
            times.append(time.perf_counter() - t0)
            print(f"slice {len(times)}/{n}: {times[-1]:.2f} s", flush=True)
        probs = np.stack(probs).astype(np.float32)
        if args.instances:
            cells = np.stack([label_cells(p, threshold, border, min_cell) for p in probs])
            if cells.max() > np.iinfo(np.uint16).max:
                raise UserError(f"{target}: {cells.max()} cells do not fit uint16 labels")
            cells = cells[0] if len(cells) == 1 else cells     # a frame: 2-D, as man_seg
            write(target, lambda f: tifffile.imwrite(f, cells.astype(np.uint16),
                                                     photometric="minisblack",
                                                     compression="zlib"))
        else:
            write(target, lambda f: tifffile.imwrite(f, probs, photometric="minisblack"))
    if len(targets) > len(stacks):
        write(targets[-1], lambda f: plot_overlay(stacks[0][0], probs[0], f))
    shown = (f"{targets[0]} and {targets[1]}" if len(targets) == 2 else
             f"{len(stacks)} files into {out}")
    print(f"wrote {shown}; {np.median(times):.2f} s per {h}x{w} slice "
          f"(median, tile {tile}, {'TTA, ' if args.tta else ''}{model.device})")


def predict_blockwise(model, meta, source, out, target, fmt, args):
    """A volume through predict_volume: lazily, block by block, on this machine or a cluster."""
    from ..volume import open_volume, predict_volume, save_volume
    try:
        arr = open_volume(source)
    except (ImportError, ValueError) as e:              # dask or zarr missing; not a volume
        raise UserError(str(e)) from None
    check_grey_type(source, arr.dtype, meta)
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
            try:
                save_volume(prob, target, overwrite=args.overwrite)
            except OSError as e:
                raise UserError(f"could not write {target} ({e.strerror or e}): the store is "
                                f"incomplete; free some space and run again with --overwrite"
                                ) from None
        else:
            out.mkdir(parents=True, exist_ok=True)
            import tifffile
            result = prob.compute()
            write(target, lambda f: tifffile.imwrite(f, result, photometric="minisblack"))
        dt = time.perf_counter() - t0
        print(f"wrote {target}; {z * h * w / dt:,.0f} voxels/s ({dt:.1f} s, "
              f"{'TTA, ' if args.tta else ''}{model.device})")
    finally:
        if client is not None:
            client.close()
