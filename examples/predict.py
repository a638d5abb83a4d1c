"""Segment an image or a stack with a trained checkpoint: probability map (TIFF) and overlay (PNG).

    python examples/predict.py runs/<run>/best.npz ../shared/data/isbi2012/test-volume.tif
    python examples/predict.py best.npz image.png --out pred --tta --tile 572 --device gpu

Writes OUT/<name>_prob.tif (float32, P(cell) per slice) and OUT/<name>_overlay.png (the first
slice with the predicted membranes in red), and prints the time per slice.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinyunet import backend                                   # noqa: E402
from tinyunet.data import load_stack                           # noqa: E402
from tinyunet.data.samples import normalise                    # noqa: E402
from tinyunet.infer import predict_tiled                       # noqa: E402
from tinyunet.train import CheckpointError, model_from_checkpoint   # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .npz checkpoint from examples/train_isbi.py")
    ap.add_argument("image", help="an image (PNG/TIFF) or a multi-page TIFF stack")
    ap.add_argument("--out", default="predictions", help="output folder")
    ap.add_argument("--tile", type=int, help="input tile size (default: the training tile)")
    ap.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    ap.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations")
    ap.add_argument("--device", default=None, help="cpu or gpu")
    args = ap.parse_args(argv)
    try:
        model, meta = model_from_checkpoint(args.checkpoint, backend.resolve_device(args.device))
    except CheckpointError as e:
        raise SystemExit(f"error: {e}")
    tile = args.tile or meta["train_config"]["tile"]
    stack = load_stack(args.image)
    x = normalise(stack, meta["mean"], meta["std"])
    probs, times = [], []
    for k, img in enumerate(x):
        t0 = time.perf_counter()
        probs.append(predict_tiled(model, img, tile=tile, batch=args.batch, tta=args.tta)[1])
        times.append(time.perf_counter() - t0)
        print(f"slice {k + 1}/{len(x)}: {times[-1]:.2f} s", flush=True)
    probs = np.stack(probs).astype(np.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.image).stem
    import tifffile
    tifffile.imwrite(out / f"{name}_prob.tif", probs, photometric="minisblack")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grey = stack[0].astype(np.float32) / max(float(stack[0].max()), 1.0)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[probs[0] < 0.5] = 0.6 * rgb[probs[0] < 0.5] + 0.4 * np.array([1.0, 0.0, 0.0])
    plt.imsave(out / f"{name}_overlay.png", np.clip(rgb, 0, 1))
    print(f"wrote {out / f'{name}_prob.tif'} and {out / f'{name}_overlay.png'}; "
          f"{np.median(times):.2f} s per {stack.shape[1]}x{stack.shape[2]} slice (median, "
          f"tile {tile}, {'TTA, ' if args.tta else ''}{model.device})")


if __name__ == "__main__":
    main()
