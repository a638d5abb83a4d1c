"""Blockwise inference over a zarr volume (predict_volume, dask's threads) against predict_tiled
slice by slice in one process: voxels per second, and peak memory for two volume sizes.

The volume is synthetic uint8 noise in a zarr store (the time does not depend on the grey
values, nor on the weights: the networks are freshly initialised, random weights). Both ways
read the same zarr store and write P(cell) to a zarr store, with the same tile: the largest that
fits --memory (tinyunet.infer.choose_tile), no larger than a slice needs. Each measurement
runs in a fresh process; peak memory is that process's peak resident set size (getrusage
ru_maxrss) minus its size after imports and a warm-up pass, so it counts what the
computation itself holds.

    python benchmarks/bench_volume.py                                  # the issue's 32 x 2048 x 2048
    python benchmarks/bench_volume.py --shapes 4x1024x1024 16x1024x1024 --threads 1
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyunet.commands.cli import block_shape, memory_size

NETS = {"tiny": dict(base_channels=8, depth=3), "cpu": dict(base_channels=16, depth=4)}
MEAN, STD = 0.5, 0.2


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def make_volume(path, shape, chunk=512):
    """Synthetic uint8 noise in a zarr store, written slice by slice."""
    import zarr
    z = zarr.open(str(path), mode="w", shape=shape, dtype="uint8",
                  chunks=(1, min(chunk, shape[1]), min(chunk, shape[2])))
    rng = np.random.default_rng(0)
    for k in range(shape[0]):
        z[k] = rng.integers(0, 256, shape[1:], dtype=np.uint8)


def one(net, store, method, memory, chunk):
    """Run one measurement in this process; print a JSON line."""
    import zarr
    import tinyunet
    from tinyunet.data import normalise
    from tinyunet.infer import choose_tile, covering_tile, predict_tiled
    from tinyunet.volume import predict_volume, save_volume
    model = tinyunet.UNet(**NETS[net], seed=0)
    vol = zarr.open(str(store), mode="r")
    z, h, w = vol.shape
    tile = choose_tile(model, memory, 1, covering_tile(max(h, w), model.depth))
    small = normalise(vol[0, :64, :64], MEAN, STD)
    predict_tiled(model, small, tile=covering_tile(64, model.depth))       # compile, warm up
    base = rss_mib()
    out = Path(store).with_name(f"out-{method}.zarr")
    t0 = time.perf_counter()
    if method == "tiled":
        res = zarr.open(str(out), mode="w", shape=vol.shape, dtype="float32",
                        chunks=(1, min(512, h), min(512, w)))
        for k in range(z):
            res[k] = predict_tiled(model, normalise(vol[k], MEAN, STD), tile=tile)[1]
        blocks = None
    else:
        import dask.array as da
        prob = predict_volume(model, da.from_zarr(vol), tile=tile, memory=memory, mean=MEAN,
                              std=STD, chunks=chunk)
        blocks = prob.chunksize
        save_volume(prob, out, overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    print(json.dumps(dict(net=net, method=method, shape=[z, h, w], tile=tile,
                          blocks=blocks, seconds=dt, voxels_per_s=z * h * w / dt,
                          peak_mib=rss_mib() - base)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["8x2048x2048", "32x2048x2048"],
                    help="volume sizes ZxYxX (two, to show the memory does not grow)")
    ap.add_argument("--nets", nargs="+", default=["tiny", "cpu"], choices=list(NETS))
    ap.add_argument("--memory", default="1G", help="forward-pass budget (choose_tile)")
    ap.add_argument("--chunk", default=None, help="Z,Y,X per block (default: from the tile)")
    ap.add_argument("--methods", nargs="+", default=["volume", "tiled"])
    ap.add_argument("--threads", type=int, help="threads per process for Numba and BLAS "
                    "(NUMBA_NUM_THREADS, OMP_NUM_THREADS, OPENBLAS_NUM_THREADS; default: theirs)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)     # net store method (child)
    a = ap.parse_args()
    memory = memory_size(a.memory)
    chunk = block_shape(a.chunk) if a.chunk else None
    if a.one:
        return one(a.one[0], a.one[1], a.one[2], memory, chunk)
    env = dict(os.environ)
    if a.threads:
        env.update({k: str(a.threads) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    print(f"{os.cpu_count()} CPU cores, float32, random weights, dask threaded scheduler, "
          f"forward budget {a.memory}, {a.threads or 'default'} Numba/BLAS threads")
    print(f"{'net':5} {'volume':>14} {'method':>13} {'tile':>5} {'blocks':>16} {'s':>7} "
          f"{'Mvoxel/s':>9} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in a.shapes:
            z, h, w = (int(v) for v in shape.lower().split("x"))
            store = Path(tmp) / f"vol-{shape}.zarr"
            make_volume(store, (z, h, w))
            for net in a.nets:
                for method in a.methods:
                    cmd = [sys.executable, __file__, "--one", net, str(store), method,
                           "--memory", a.memory] + (["--chunk", a.chunk] if a.chunk else [])
                    r = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                  text=True, env=env).stdout.strip()
                                   .splitlines()[-1])
                    name = "predict_volume" if method == "volume" else "predict_tiled"
                    print(f"{net:5} {shape:>14} {name:>14} {r['tile']:5d} "
                          f"{str(tuple(r['blocks'] or ())) if r['blocks'] else 'slices':>16} "
                          f"{r['seconds']:7.1f} {r['voxels_per_s'] / 1e6:9.3f} "
                          f"{r['peak_mib']:9.0f}", flush=True)


if __name__ == "__main__":
    main()
