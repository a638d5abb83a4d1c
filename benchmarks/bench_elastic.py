"""Elastic deformation of one 572x572 float32 image and its label image: tinyunet's Numba kernel
against elasticdeform.deform_random_grid (its C implementation), in one run.

Both: sigma 10, 3x3 grid, cubic for the image, nearest for the labels, mirror border. Timed after
a warm-up (so Numba's compile time is not counted; it is reported separately). Prints each median
time and the ratio. Needs elasticdeform (pip install --no-binary elasticdeform elasticdeform).

    python benchmarks/bench_elastic.py [--reps 50] [--size 572]
"""
import argparse
import os
import subprocess
import sys

import numpy as np
from timing import median_time


def import_times():
    """Seconds to import tinyunet.kernels.elastic and run it once, in a fresh interpreter."""
    code = ("import time; t = time.perf_counter(); import numpy as np; from tinyunet.kernels import elastic;"
            "elastic.elastic_deform([np.zeros((64, 64), np.float32), np.zeros((64, 64), np.uint8)],"
            " order=[3, 0], rng=0); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--size", type=int, default=572)
    a = ap.parse_args()
    import elasticdeform
    from tinyunet.kernels import elastic

    rng = np.random.default_rng(0)
    image = rng.random((a.size, a.size)).astype(np.float32)
    labels = (rng.random((a.size, a.size)) > 0.5).astype(np.uint8)

    def ours():
        elastic.elastic_deform([image, labels], sigma=10, grid=3, order=[3, 0], rng=rng)

    def theirs():
        elasticdeform.deform_random_grid([image, labels], sigma=10, points=3, order=[3, 0],
                                         mode="mirror")

    def theirs_image_only():
        elasticdeform.deform_random_grid(image, sigma=10, points=3, order=3, mode="mirror")

    t_ours, t_theirs = median_time(ours, a.reps), median_time(theirs, a.reps)
    t_img = median_time(theirs_image_only, a.reps)
    print(f"elastic deformation, {a.size}x{a.size} float32 image + uint8 labels, "
          f"{os.cpu_count()} cores, median of {a.reps}")
    print(f"  elasticdeform (image only)       {t_img * 1e3:8.2f} ms")
    print(f"  elasticdeform (image + labels)   {t_theirs * 1e3:8.2f} ms")
    print(f"  tinyunet kernels.elastic         {t_ours * 1e3:8.2f} ms")
    print(f"  speed-up vs elasticdeform        {t_theirs / t_ours:8.1f}x")
    print(f"  import + first call, cached JIT  {import_times():8.2f} s")


if __name__ == "__main__":
    main()
