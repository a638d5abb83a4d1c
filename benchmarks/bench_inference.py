"""Time to segment one 512x512 ISBI slice with the paper's network through predict_tiled.

The paper: under a second on a 2015 GPU (NVIDIA Titan, 6 GB). The time does not depend on the
weights, so a freshly initialised network is used. Tile 572 (the paper's) needs 2x2 tiles for a
512x512 slice; tile 700 covers it in one.

    python benchmarks/bench_inference.py [--device cpu|gpu] [--tiles 572 700] [--reps 3]
"""
import argparse
import os
import time

import numpy as np

import tinyunet
from tinyunet.data import default_isbi_dir, load_stack
from tinyunet.infer import predict_tiled, tile_grid


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiles", type=int, nargs="*", default=[572, 700])
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    path = default_isbi_dir() / "test-volume.tif"
    image = (load_stack(path)[0] if path.exists()
             else np.random.default_rng(0).integers(0, 256, (512, 512)))
    x = (image.astype(np.float32) / 255 - 0.5) / 0.2
    model = tinyunet.UNet(device=a.device)                   # the paper's network
    print(f"one 512x512 slice, paper network (31,030,658 parameters), float32, {a.device}, "
          f"{os.cpu_count()} CPU cores, median of {a.reps}")
    for tile in a.tiles:
        out = model.output_size(tile)
        n = len(tile_grid(512, out, 16)[0]) ** 2
        predict_tiled(model, x, tile=tile)                    # warm-up
        ts = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            predict_tiled(model, x, tile=tile)
            ts.append(time.perf_counter() - t0)
        print(f"  tile {tile} ({n} tile{'s' if n > 1 else ''} of {out}x{out}): "
              f"{np.median(ts):.2f} s")


if __name__ == "__main__":
    main()
