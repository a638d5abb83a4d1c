"""Winograd F(2x2, 3x3) (kernels/winograd.py) against the direct kernel (kernels/conv_relu.py):
the forward pass of every 3x3 layer shape of the base-16 network at 572x572 and of the paper's
widest layers, one thread, median-free minimum of alternating runs.

    python benchmarks/bench_winograd.py
"""
import time

import numpy as np

from tinyunet.kernels import conv_relu as ck
from tinyunet.kernels import threads, winograd as wg

SHAPES = [(16, 16, 570), (16, 32, 284), (32, 32, 282), (32, 64, 140), (64, 64, 138),
          (64, 128, 68), (128, 128, 66), (128, 256, 32), (256, 256, 30), (256, 128, 56),
          (128, 128, 54), (128, 64, 104), (64, 64, 102), (64, 32, 200), (32, 32, 198),
          (32, 16, 392), (16, 16, 390), (512, 512, 66), (1024, 1024, 30), (512, 256, 104),
          (64, 64, 570), (128, 128, 282)]


def main():
    threads.THREADS = 1
    rng = np.random.default_rng(0)
    print("C -> F, input HxW: direct ms (GFLOP/s) | winograd ms (direct-equivalent GFLOP/s), speed-up")
    for c, f, h in SHAPES:
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        w = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        b = np.zeros(f, np.float32)
        y = np.empty((1, f, h - 2, h - 2), np.float32)
        wp = ck.pack(w)
        runs = (lambda: ck._conv(x, wp, b, y, True), lambda: wg.conv(x, w, b, y, True))
        for run in runs:
            run()
        times = [[], []]
        for _ in range(5 if c * f * h * h < 5e8 else 2):
            for t, run in zip(times, runs):
                t0 = time.perf_counter()
                run()
                t.append(time.perf_counter() - t0)
        d, g = min(times[0]), min(times[1])
        gf = 2 * c * f * 9 * (h - 2) ** 2 / 1e9
        print(f"{c:5d} -> {f:5d}, {h}x{h}: {d * 1e3:7.1f} ({gf / d:5.1f}) | {g * 1e3:7.1f} "
              f"({gf / g:5.1f}), {d / g:.2f}x", flush=True)


if __name__ == "__main__":
    main()
