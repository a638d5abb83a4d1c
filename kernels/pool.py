"""2x2 max pooling on the CPU: the Numba twin of tinyunet.ops.max_pool2x2 (same signatures,
same numbers; tests/test_kernels_conv.py checks them against each other).

One pass over x makes the output and the index (0..3) of each window's winning corner, where
the readable op makes four strided comparisons of whole arrays; the (image, channel) planes are
split among the CPU engine's threads.
"""
import numpy as np
from numba import njit

from ..ops.max_pool2x2 import check_shape
from . import threads
from .conv_relu import _split


def forward(x):
    """x (N, C, H, W), H and W even -> (y (N, C, H/2, W/2), cache = (idx, x.shape)).

    Ties go to the first maximum in row-major window order, as in tinyunet.ops.max_pool2x2, and
    odd sizes are the same error."""
    check_shape(x)
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    idx = np.empty((n, c, h // 2, w // 2), np.uint8)
    _planes(lambda p0, p1: _forward(x, y, idx, p0, p1), n * c)
    return y, (idx, x.shape)


def backward(dy, cache):
    """dy (N, C, H/2, W/2) -> dx (N, C, H, W): each dy to its window's winning corner."""
    idx, shape = cache
    dy = np.ascontiguousarray(dy)
    dx = np.empty(shape, dy.dtype)
    _planes(lambda p0, p1: _backward(dy, idx, dx, p0, p1), shape[0] * shape[1])
    return dx


def _planes(fn, n):
    threads.parallel_runs(lambda t, run: [fn(p0, p1) for p0, p1 in run],
                          _split(n, min(n, 4 * threads.THREADS)))


@njit(nogil=True, cache=True)
def _forward(x, y, idx, p0, p1):
    """Planes p0..p1-1 (plane = image * C + channel)."""
    c = x.shape[1]
    h, w = y.shape[2], y.shape[3]
    for nc in range(p0, p1):
        i, ch = nc // c, nc % c
        for r in range(h):
            for q in range(w):
                best, k = x[i, ch, 2 * r, 2 * q], 0
                v = x[i, ch, 2 * r, 2 * q + 1]
                if v > best:
                    best, k = v, 1
                v = x[i, ch, 2 * r + 1, 2 * q]
                if v > best:
                    best, k = v, 2
                v = x[i, ch, 2 * r + 1, 2 * q + 1]
                if v > best:
                    best, k = v, 3
                y[i, ch, r, q] = best
                idx[i, ch, r, q] = k


@njit(nogil=True, cache=True)
def _backward(dy, idx, dx, p0, p1):
    c = dy.shape[1]
    ho, wo = dy.shape[2], dy.shape[3]
    for nc in range(p0, p1):
        i, ch = nc // c, nc % c
        for r in range(ho):
            for q in range(wo):
                k = idx[i, ch, r, q]
                g = dy[i, ch, r, q]
                dx[i, ch, 2 * r, 2 * q] = g if k == 0 else 0
                dx[i, ch, 2 * r, 2 * q + 1] = g if k == 1 else 0
                dx[i, ch, 2 * r + 1, 2 * q] = g if k == 2 else 0
                dx[i, ch, 2 * r + 1, 2 * q + 1] = g if k == 3 else 0
