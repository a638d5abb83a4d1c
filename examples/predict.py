"""Segment an image, a stack or a whole volume with a trained checkpoint: P(cell) per pixel.

    python examples/predict.py runs/<run>/best.npz ../shared/data/isbi2012/test-volume.tif --tta
    python examples/predict.py best.npz image.png --out pred --tile 572 --device gpu
    python examples/predict.py best.npz volume.zarr                     # blockwise, with dask
    python examples/predict.py best.npz volume.zarr --scheduler tcp://10.0.0.5:8786 --chunk 1,1024,1024

An image or a TIFF stack that fits the memory budget is segmented in memory and written as
OUT/<name>_prob.tif (float32, P(cell) per slice) with OUT/<name>_overlay.png (the first slice,
predicted membranes in red). A zarr store, a TIFF larger than the budget, or --chunk,
--scheduler or --format zarr go through tinyunet.infer.predict_volume (dask, block by block;
pip install 'tinyunet[volume]') into OUT/<name>_prob.zarr.

OUT is the folder `predictions` beside the checkpoint (runs/<run>/predictions: ignored by git,
like the run). Existing outputs are kept unless --overwrite. By default the tile is the largest
valid one whose forward pass fits --memory (and no larger than the image needs); --tile picks
one. Every argument is checked before anything is written; a mistake prints one line
`error: ...` and exits with status 2 (--debug shows the traceback).
"""
import argparse
import json
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinyunet import backend                                           # noqa: E402
from tinyunet.cli import UserError, run_cli                           # noqa: E402
from tinyunet.data import load_stack                                   # noqa: E402
from tinyunet.data.samples import normalise                            # noqa: E402
from tinyunet.infer import choose_tile, covering_tile, predict_tiled   # noqa: E402
from tinyunet.model import check_input_size                            # noqa: E402
from tinyunet.train import CheckpointError, model_from_checkpoint      # noqa: E402

INSTALL = "pip install 'tinyunet[volume]'"
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text):
    """'512M', '2G', '1.5G' or a number of bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--memory must be a positive size such as 512M or 2G, got {text!r}")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def parse_chunk(text):
    """'512' -> (1, 512, 512); 'z,y,x' -> (z, y, x)."""
    try:
        parts = [int(p) for p in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or min(parts) < 1:
        raise UserError(f"--chunk must be Z,Y,X voxels per block (e.g. 1,1024,1024) or one "
                        f"size for Y and X, all positive, got {text!r}")
    return tuple(parts)


def load_model(path, device):
    """(model, meta) from a checkpoint, with one clear line for anything that is not one."""
    path = Path(path)
    hint = "give the best.npz or latest.npz of a training run (runs/<run>/best.npz)"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: {hint}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint: {hint}")
    if not zipfile.is_zipfile(path) or "meta.npy" not in zipfile.ZipFile(path).namelist():
        raise UserError(f"{path} is not a tinyunet checkpoint (a .npz holding the model's "
                        f"settings in 'meta', as examples/train_isbi.py writes): {hint}")
    try:
        return model_from_checkpoint(path, device)
    except CheckpointError as e:
        if "pickle" in str(e):                 # never suggest unpickling someone else's file
            raise UserError(f"{path} is corrupt or not a tinyunet checkpoint: {hint}") from None
        raise UserError(str(e)) from None


def training_data(meta, checkpoint):
    """What the checkpoint was trained on, as recorded ('synthetic' or a folder), or None.

    Looked for in the checkpoint's metadata (train_config, as examples/train_isbi.py saves
    it) and in config.json of its run folder, under 'data': a dict with 'source', or a string.
    Older runs did not record it: then None, and nothing is said."""
    configs = [meta, meta.get("train_config") or {}]
    config_json = Path(checkpoint).parent / "config.json"
    try:
        configs.append(json.loads(config_json.read_text()))
    except (OSError, ValueError):
        pass
    for cfg in configs:
        for key in ("data", "data_source"):
            value = cfg.get(key) if isinstance(cfg, dict) else None
            if isinstance(value, dict):
                value = value.get("source") or value.get("name")
            if value:
                return str(value)
    return None


def open_volume(path):
    """A zarr array or a tifffile-backed stack, opened lazily for predict_volume."""
    try:
        import dask.array  # noqa: F401
        import zarr
    except ImportError:
        raise UserError(f"{path} is segmented block by block with dask and zarr, which are "
                        f"not installed: {INSTALL}") from None
    try:
        if path.is_dir():
            arr = zarr.open(str(path), mode="r")
        else:
            import tifffile
            arr = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except Exception as e:                   # zarr/tifffile raise many kinds for a bad store
        raise UserError(f"{path} is not a zarr array or a TIFF stack that can be read "
                        f"({type(e).__name__}: {e})") from None
    if not hasattr(arr, "shape"):            # a zarr group
        names = [k for k, _ in arr.arrays()]
        raise UserError(f"{path} is a zarr group: give one of its arrays, e.g. "
                        f"{path / names[0] if names else path / '<array>'}")
    if arr.ndim not in (2, 3):
        raise UserError(f"{path}: expected a 2-D image or a stack (Z, Y, X), got shape "
                        f"{arr.shape}")
    return arr


def is_zarr(path):
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray",
                                                               ".zgroup"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .npz checkpoint from examples/train_isbi.py")
    ap.add_argument("image", help="an image (PNG/TIFF), a multi-page TIFF or a zarr store")
    ap.add_argument("--out", help="output folder (default: predictions/ beside the checkpoint)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ap.add_argument("--tile", type=int,
                    help="input tile size (default: the largest that fits --memory)")
    ap.add_argument("--memory", default="2G", help="memory budget of one forward pass, which "
                    "picks the tile and the blocks (default 2G)")
    ap.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    ap.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations")
    ap.add_argument("--device", default=None, help="cpu or gpu")
    ap.add_argument("--format", choices=("auto", "tif", "zarr"), default="auto",
                    help="output: tif, zarr, or auto (zarr for volumes, else tif)")
    ap.add_argument("--chunk", help="Z,Y,X voxels per block for predict_volume (default: "
                                    "from the tile)")
    ap.add_argument("--scheduler", help="a dask.distributed scheduler address, e.g. "
                                        "tcp://10.0.0.5:8786 (default: this machine)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    # ---- every argument is checked before anything is written -------------------------------
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1 (tiles per forward pass), got {args.batch}")
    memory = parse_memory(args.memory)
    chunk = parse_chunk(args.chunk) if args.chunk else None
    try:
        device = backend.resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e)) from None
    model, meta = load_model(args.checkpoint, device)
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
        4 * source.stat().st_size > memory
    blockwise = (is_zarr(source) or big_tiff or args.format == "zarr" or chunk is not None
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
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot write to {out}: {probe} is a file")
    trained_on = (training_data(meta, args.checkpoint) or "").lower()
    if trained_on == "synthetic" or trained_on.startswith("synthetic em"):   # train_isbi's names
        print(f"warning: {args.checkpoint} was trained on the built-in synthetic EM set, not on "
              f"real EM images: its predictions on real data mean little", file=sys.stderr)

    if blockwise:
        return predict_blockwise(model, meta, source, out, targets[0], fmt, chunk, memory, args)
    try:
        stack = load_stack(source)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UserError(f"{source} is not an image tinyunet can read (PNG, JPEG or TIFF): "
                        f"{type(e).__name__}: {e}") from None
    h, w = stack.shape[1:]
    try:
        tile = args.tile or choose_tile(model, memory, args.batch,
                                        covering_tile(max(h, w), model.depth))
    except ValueError as e:
        raise UserError(f"{e}: raise --memory or give a --tile") from None
    x = normalise(stack, meta["mean"], meta["std"])
    probs, times = [], []
    for k, img in enumerate(x):
        t0 = time.perf_counter()
        probs.append(predict_tiled(model, img, tile=tile, batch=args.batch, tta=args.tta)[1])
        times.append(time.perf_counter() - t0)
        print(f"slice {k + 1}/{len(x)}: {times[-1]:.2f} s", flush=True)
    probs = np.stack(probs).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    import tifffile
    tifffile.imwrite(targets[0], probs, photometric="minisblack")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grey = stack[0].astype(np.float32) / max(float(stack[0].max()), 1.0)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[probs[0] < 0.5] = 0.6 * rgb[probs[0] < 0.5] + 0.4 * np.array([1.0, 0.0, 0.0])
    plt.imsave(targets[1], np.clip(rgb, 0, 1))
    print(f"wrote {targets[0]} and {targets[1]}; {np.median(times):.2f} s per {h}x{w} slice "
          f"(median, tile {tile}, {'TTA, ' if args.tta else ''}{model.device})")


def predict_blockwise(model, meta, source, out, target, fmt, chunk, memory, args):
    """A volume through predict_volume: lazily, block by block, on this machine or a cluster."""
    arr = open_volume(source)
    from tinyunet.infer import predict_volume, save_volume
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
            prob = predict_volume(model, volume, tile=args.tile, chunks=chunk, memory=memory,
                                  tta=args.tta, mean=meta["mean"], std=meta["std"],
                                  batch=args.batch)
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


if __name__ == "__main__":
    run_cli(main)
