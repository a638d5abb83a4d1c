"""The paper's weight map for the 30 ISBI 2012 training label images: tinyunet's Numba kernel
against the usual stack-and-sort implementation (one full distance transform per cell, sort the
stack, take the two smallest), in one run, after a warm-up (Numba compile time not counted).

    python benchmarks/bench_weight_map.py [--data ../shared/data/isbi2012] [--ref-images 5]

The reference is slow (seconds per image), so by default it runs on the first 5 images and the
ratio compares per-image means over those same 5; ours is also timed over all 30.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from tinyunet.kernels.weight_map import class_weight_map, instances_from_mask, weight_map

ROOT = Path(__file__).resolve().parents[1]


def reference_weight_map(inst, w0=10.0, sigma=5.0):
    """Stack-and-sort: one distance transform per cell, the two smallest per pixel."""
    cells = [c for c in np.unique(inst) if c > 0]
    dist = np.stack([ndi.distance_transform_edt(inst != c) for c in cells])
    dist.sort(axis=0)
    border = np.where(inst == 0, w0 * np.exp(-(dist[0] + dist[1]) ** 2 / (2 * sigma ** 2)), 0)
    return class_weight_map(inst) + border


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--ref-images", type=int, default=5)
    a = ap.parse_args()
    labels = tifffile.imread(Path(a.data) / "train-labels.tif")
    insts = [instances_from_mask(lab, foreground=255) for lab in labels]
    weight_map(insts[0])                                       # warm-up (JIT)
    t_ours = []
    for inst in insts:
        t0 = time.perf_counter()
        weight_map(inst)
        t_ours.append(time.perf_counter() - t0)
    t_ref, err = [], 0.0
    for inst in insts[:a.ref_images]:
        t0 = time.perf_counter()
        ref = reference_weight_map(inst)
        t_ref.append(time.perf_counter() - t0)
        err = max(err, float(np.abs(weight_map(inst) - ref).max()))
    n = a.ref_images
    print(f"weight map (w0 10, sigma 5, balanced w_c), ISBI 2012 train labels "
          f"({len(insts)} images, {np.mean([i.max() for i in insts]):.0f} cells on average), "
          f"{os.cpu_count()} cores")
    print(f"  stack-and-sort reference   {np.mean(t_ref) * 1e3:9.1f} ms/image (first {n})")
    print(f"  tinyunet kernels           {np.mean(t_ours[:n]) * 1e3:9.1f} ms/image (first {n}), "
          f"{np.mean(t_ours) * 1e3:.1f} ms/image (all {len(insts)}), max {max(t_ours) * 1e3:.1f}")
    print(f"  speed-up                   {np.mean(t_ref) / np.mean(t_ours[:n]):9.0f}x")
    print(f"  max |ours - reference|     {err:9.2e}")


if __name__ == "__main__":
    main()
