"""The engine: which implementation of the network's ops runs, chosen here and nowhere else.

The 3x3 conv + ReLU, the 2x2 max pool, the 2x2 up-convolution, the crop-and-concatenate and the
optimizers' parameter updates have two implementations with one signature each: the readable
ops of tinyunet/ops (NumPy or CuPy) and their Numba twins in the kernels/ folder, imported as
tinyunet.kernels (CPU only; faster, and threaded: kernels/conv_relu.py says how).
`choose_engine` picks one: "kernels" on the CPU, "readable" on the GPU, and "readable"
everywhere with TINYUNET_KERNELS=0 in the environment.
The network calls whatever it is given and never branches on it; tests check that both give the
same numbers (the kernels sum in another order, so to rounding).
"""
import contextlib
import os
from collections import namedtuple

from .kernels import concat, conv_relu, pool, threads, up_conv, updates as kernel_updates
from .ops import conv3x3_relu, crop_and_concat, max_pool2x2, up_conv2x2, updates

# name: "kernels" or "readable"; conv3x3_relu, max_pool2x2, up_conv2x2, crop_and_concat: modules
# with forward() and backward() of the same signatures; updates: the optimizers' and the moving
# average's parameter updates (ops/updates.py); scope: a context manager the engine's work runs in
Engine = namedtuple("Engine", "name conv3x3_relu max_pool2x2 up_conv2x2 crop_and_concat updates "
                              "scope")
ENGINES = ("kernels", "readable")


def choose_engine(device, name=None):
    """The Engine for `device` ("cpu" or "gpu"): `name`, or by default the kernels on the CPU
    unless $TINYUNET_KERNELS is "0", and the readable ops on the GPU."""
    if name is None:
        kernels = device == "cpu" and os.environ.get("TINYUNET_KERNELS", "1") != "0"
        name = "kernels" if kernels else "readable"
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: valid engines are 'kernels' and 'readable'")
    if name == "kernels":
        if device != "cpu":
            raise ValueError("engine 'kernels' (Numba) runs on the CPU only; on the GPU use "
                             "engine 'readable'")
        # BLAS held to one thread for a whole forward or backward: kernels/threads.py says why
        return Engine(name, conv_relu, pool, up_conv, concat, kernel_updates,
                      lambda: threads.blas_threads(1))
    return Engine(name, conv3x3_relu, max_pool2x2, up_conv2x2, crop_and_concat, updates,
                  contextlib.nullcontext)
