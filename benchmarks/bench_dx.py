"""The CPU engine's two ways to make a 3x3 conv's dx, timed against each other in one process:
"col2im" (w^T @ dz folded back by col2im, the default) and "correlation" (the full correlation
of the padded dz with the flipped kernel); see kernels.conv.conv3x3_relu_backward.

    python benchmarks/bench_dx.py [--base 16 64] [--reps 7]

One training step (forward, weighted loss, backward) at 572x572, the two ways alternating.
"""
import argparse
import time

import numpy as np

import tinyunet
from kernels import conv as ck


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    for base in a.base:
        model = tinyunet.UNet(base_channels=base)
        x = rng.standard_normal((1, 1, 572, 572)).astype(np.float32)
        labels = rng.integers(0, 2, (1, 388, 388))
        weights = rng.uniform(1, 10, (1, 388, 388)).astype(np.float32)

        def step():
            logits = model.forward(x, train=True)
            model.backward(tinyunet.softmax_cross_entropy(logits, labels, weights)[1],
                           input_grad=False)
        times = {"col2im": [], "correlation": []}
        for rep in range(a.reps + 1):                     # the first round warms up
            for way in times:
                ck.DX = way
                t0 = time.perf_counter()
                step()
                if rep:
                    times[way].append(time.perf_counter() - t0)
        ck.DX = "col2im"
        print(f"base {base}: step with dx by " + ", by ".join(
            f"{way} {np.median(t):.3f} s" for way, t in times.items()) + f" (median of {a.reps})",
            flush=True)


if __name__ == "__main__":
    main()
