"""Where one training step's time goes: seconds per op, and inside the 3x3 convolutions, the
GEMMs against the copies (im2col, col2im) and the fused bias/ReLU passes.

    python benchmarks/profile_step.py [--base 16] [--size 572] [--readable] [--clock cpu]

Wraps each op's functions (the CPU kernels of kernels/conv_relu.py and pool.py, or with
--readable the readable ops that the GPU runs) with timers, runs a warm-up step and a timed step (forward, weighted loss,
backward) and prints the split used in docs/01-convolution.md. --clock cpu counts the process's
CPU time instead of wall time: with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 that is the work
of each part, which a busy machine disturbs much less than wall time.
"""
import argparse
import time

import numpy as np

import tinyunet
from tinyunet import conv1x1, conv3x3, crop_and_concat, max_pool2x2, relu, up_conv2x2
from tinyunet.kernels import conv_relu as ck
from tinyunet.kernels import pool, threads

TIMES = {}
CLOCK = time.perf_counter


def timed_fn(fn, key):
    """fn, adding its time to TIMES[key] at every call."""
    def wrapper(*args, **kwargs):
        t0 = CLOCK()
        out = fn(*args, **kwargs)
        TIMES[key] = TIMES.get(key, 0.0) + CLOCK() - t0
        return out
    return wrapper


def timed(module, name, key):
    setattr(module, name, timed_fn(getattr(module, name), key))


def main():
    global CLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--size", type=int, default=572)
    ap.add_argument("--readable", action="store_true", help="profile the readable ops instead")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = ap.parse_args()
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    for mod in (conv1x1, up_conv2x2, crop_and_concat):
        for fn in ("forward", "backward"):
            timed(mod, fn, f"{mod.__name__.split('.')[-1]}.{fn}")
    timed(tinyunet, "softmax_cross_entropy", "softmax_cross_entropy")
    if a.readable:
        conv = ("conv3x3.forward", "conv3x3.backward")
        copies = ("im2col", "col2im")
        for mod in (conv3x3, relu, max_pool2x2):
            for fn in ("forward", "backward"):
                timed(mod, fn, f"{mod.__name__.split('.')[-1]}.{fn}")
        timed(conv3x3, "im2col", "im2col")
        timed(conv3x3, "col2im", "col2im")
    else:
        conv = ("conv_relu.forward", "conv_relu.backward")
        copies = ("im2col_band", "im2col_band (backward: rebuilt)", "col2im_band_add",
                  "bias_relu_band", "relu_grad_band")
        for fn in ("col2im_band_add", "bias_relu_band", "relu_grad_band"):
            timed(ck, fn, fn)
        timed(ck, "forward", conv[0])
        timed(pool, "forward", "pool.forward")
        timed(pool, "backward", "pool.backward")
        # the columns rebuilt in the backward pass (the price of not keeping them) get a line of
        # their own: im2col_band as called from inside conv_relu.backward
        im2col, backward = ck.im2col_band, ck.backward
        forward_im2col = ck.im2col_band = timed_fn(im2col, copies[0])

        def backward_rebuilding(*args, **kwargs):
            ck.im2col_band = timed_fn(im2col, copies[1])
            try:
                return backward(*args, **kwargs)
            finally:
                ck.im2col_band = forward_im2col
        ck.backward = timed_fn(backward_rebuilding, conv[1])
    model = tinyunet.UNet(base_channels=a.base, engine="readable" if a.readable else "kernels")
    rng = np.random.default_rng(0)
    out = model.output_size(a.size)
    x = rng.standard_normal((1, 1, a.size, a.size)).astype(np.float32)
    labels = rng.integers(0, 2, (1, out, out))
    weights = rng.uniform(1, 10, (1, out, out)).astype(np.float32)
    for _ in range(2):                                   # warm-up, then the timed step
        TIMES.clear()
        t0 = CLOCK()
        _, d = tinyunet.softmax_cross_entropy(model.forward(x, train=True), labels, weights)
        model.backward(d, input_grad=False)
        total = CLOCK() - t0
    copy = sum(TIMES.get(k, 0.0) for k in copies)
    gemm = sum(TIMES.get(k, 0.0) for k in conv) - copy
    head = (f"base {a.base}, {a.size}x{a.size}, {'readable ops' if a.readable else 'CPU kernels'}, "
            f"{a.clock} clock: step {total:.3f} s")
    if a.readable or a.clock == "cpu" or threads.THREADS == 1:
        print(f"{head}; 3x3-conv GEMMs {gemm / total:.0%}, {' + '.join(copies)} "
              f"{copy / total:.0%}, everything else {1 - (gemm + copy) / total:.0%}")
    else:   # the kernels run in THREADS threads: their lines add up the threads' wall times
        print(f"{head} (the kernel lines add up {threads.THREADS} threads; for the split of the "
              f"work run NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ... --clock cpu)")
    for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"  {k:24s} {v:7.3f} s")


if __name__ == "__main__":
    main()
