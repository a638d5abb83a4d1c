"""Where one training step's time goes: seconds per part of the step, the 3x3 convolutions split
into their forward tiles, dx, dw and the ReLU-gradient pass.

    python benchmarks/profile_step.py [--base 16] [--size 572] [--readable] [--clock cpu]

Wraps the CPU engine's functions (kernels/conv_relu.py, up_conv.py, concat.py, pool.py, or with
--readable the readable ops that the GPU runs) with timers, runs two warm-up steps and a timed
step (forward, weighted loss, backward) and prints the split of the README's profile table.
--clock cpu counts the process's CPU time instead of wall time: with NUMBA_NUM_THREADS=1 that is
the work of each part, which a busy machine disturbs much less than wall time. With more threads
the parts are wall time of the calls made from the main thread.
"""
import argparse
import time

import numpy as np

import tinyunet
from tinyunet import conv1x1, conv3x3, crop_and_concat, max_pool2x2, relu, up_conv2x2
from tinyunet.kernels import concat, pool, threads, up_conv
from tinyunet.kernels import conv_relu as ck

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


def wrap_kernels():
    """The engine's parts, each on its own line; returns the lines that are the 3x3 convs."""
    timed(ck, "relu_grad_pad", "3x3: ReLU gradient + padding")
    timed(ck, "dw_rows", "3x3: dw")
    timed(ck, "dw_flat", "3x3: dw")
    timed(ck, "pack", "3x3: weight packing")
    conv, forward = ck._conv, ck.forward
    ck._conv = timed_fn(conv, "3x3: dx")                # _conv called by backward: dx
    forward_conv = timed_fn(conv, "3x3: forward")

    def forward_timed(*args, **kwargs):
        ck._conv = forward_conv
        try:
            return forward(*args, **kwargs)
        finally:
            ck._conv = timed_fn(conv, "3x3: dx")
    ck.forward = forward_timed
    for mod, name in ((up_conv, "up-conv"), (concat, "crop + concat"), (pool, "max pool")):
        timed(mod, "forward", f"{name} forward")
        timed(mod, "backward", f"{name} backward")
    return [k for k in ("3x3: forward", "3x3: dx", "3x3: dw", "3x3: ReLU gradient + padding",
                        "3x3: weight packing")]


def wrap_readable():
    for mod in (conv3x3, relu, max_pool2x2, up_conv2x2, crop_and_concat):
        for fn in ("forward", "backward"):
            timed(mod, fn, f"{mod.__name__.split('.')[-1]}.{fn}")
    timed(conv3x3, "im2col", "im2col")
    timed(conv3x3, "col2im", "col2im")
    return ["conv3x3.forward", "conv3x3.backward", "relu.forward", "relu.backward"]


def main():
    global CLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--size", type=int, default=572)
    ap.add_argument("--readable", action="store_true", help="profile the readable ops instead")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = ap.parse_args()
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    conv_lines = wrap_readable() if a.readable else wrap_kernels()
    for fn in ("forward", "backward"):
        timed(conv1x1, fn, f"1x1 conv {fn}")
    timed(tinyunet, "softmax_cross_entropy", "softmax cross-entropy")
    model = tinyunet.UNet(base_channels=a.base, engine="readable" if a.readable else "kernels")
    rng = np.random.default_rng(0)
    out = model.output_size(a.size)
    x = rng.standard_normal((1, 1, a.size, a.size)).astype(np.float32)
    labels = rng.integers(0, 2, (1, out, out))
    weights = rng.uniform(1, 10, (1, out, out)).astype(np.float32)
    for _ in range(3):                                   # warm-up, then the timed step
        TIMES.clear()
        t0 = CLOCK()
        _, d = tinyunet.softmax_cross_entropy(model.forward(x, train=True), labels, weights)
        model.backward(d, input_grad=False)
        total = CLOCK() - t0
    convs = sum(TIMES.get(k, 0.0) for k in conv_lines)
    print(f"base {a.base}, {a.size}x{a.size}, {'readable ops' if a.readable else 'CPU kernels'}, "
          f"{threads.THREADS} thread{'s' if threads.THREADS > 1 else ''}, {a.clock} clock: step "
          f"{total:.3f} s, 3x3 convolutions {convs / total:.0%}")
    for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"  {k:30s} {v:7.3f} s {v / total:6.1%}")
    rest = total - sum(TIMES.values())
    print(f"  {'everything else':30s} {rest:7.3f} s {rest / total:6.1%}")


if __name__ == "__main__":
    main()
