"""Where one training step's time goes: seconds per op (forward, backward, im2col, col2im).

    python benchmarks/profile_step.py [--base 16] [--size 572]

Wraps each op module's functions with timers, runs a warm-up step and a timed step (forward,
weighted loss, backward) and prints the split used in docs/01-convolution.md.
"""
import argparse
import time

import numpy as np

import tinyunet
from tinyunet import conv1x1, conv3x3, crop_and_concat, max_pool2x2, relu, up_conv2x2

TIMES = {}


def timed(module, name, key):
    fn = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        TIMES[key] = TIMES.get(key, 0.0) + time.perf_counter() - t0
        return out

    setattr(module, name, wrapper)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--size", type=int, default=572)
    a = ap.parse_args()
    for mod in (conv3x3, conv1x1, relu, max_pool2x2, up_conv2x2, crop_and_concat):
        for fn in ("forward", "backward"):
            timed(mod, fn, f"{mod.__name__.split('.')[-1]}.{fn}")
    timed(conv3x3, "im2col", "im2col")
    timed(conv3x3, "col2im", "col2im")
    model = tinyunet.UNet(base_channels=a.base)
    rng = np.random.default_rng(0)
    out = model.output_size(a.size)
    x = rng.standard_normal((1, 1, a.size, a.size)).astype(np.float32)
    labels = rng.integers(0, 2, (1, out, out))
    weights = rng.uniform(1, 10, (1, out, out)).astype(np.float32)
    for _ in range(2):                                   # warm-up, then the timed step
        TIMES.clear()
        t0 = time.perf_counter()
        _, d = tinyunet.softmax_cross_entropy(model.forward(x, train=True), labels, weights)
        model.backward(d)
        total = time.perf_counter() - t0
    copies = TIMES["im2col"] + TIMES["col2im"]
    gemm = TIMES["conv3x3.forward"] + TIMES["conv3x3.backward"] - copies
    print(f"base {a.base}, {a.size}x{a.size}: step {total:.3f} s; 3x3-conv GEMMs {gemm / total:.0%}, "
          f"im2col + col2im {copies / total:.0%}, everything else {1 - (gemm + copies) / total:.0%}")
    for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"  {k:22s} {v:7.3f} s")


if __name__ == "__main__":
    main()
