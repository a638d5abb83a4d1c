"""2x2 max pooling on the CPU: the Numba twin of tinyunet.ops.max_pool2x2 (same signatures,
same numbers; tests/test_kernels_conv.py checks them against each other).

One pass over x makes the output and the index (0..3) of each window's winning corner, where
the readable op makes four strided comparisons of whole arrays.
"""
import numpy as np
from numba import njit

from ..ops.max_pool2x2 import check_shape


def forward(x):
    """x (N, C, H, W), H and W even -> (y (N, C, H/2, W/2), cache = (idx, x.shape)).

    Ties go to the first maximum in row-major window order, as in tinyunet.ops.max_pool2x2, and
    odd sizes are the same error."""
    check_shape(x)
    y, idx = _forward(x)
    return y, (idx, x.shape)


def backward(dy, cache):
    """dy (N, C, H/2, W/2) -> dx (N, C, H, W): each dy to its window's winning corner."""
    return _backward(np.ascontiguousarray(dy), cache[0])


@njit(nogil=True, cache=True)
def _forward(x):
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    idx = np.empty((n, c, h // 2, w // 2), np.uint8)
    for nc in range(n * c):
        i, ch = nc // c, nc % c
        for r in range(h // 2):
            for q in range(w // 2):
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
    return y, idx


@njit(nogil=True, cache=True)
def _backward(dy, idx):
    n, c, ho, wo = dy.shape
    dx = np.zeros((n, c, 2 * ho, 2 * wo), dy.dtype)
    for nc in range(n * c):
        i, ch = nc // c, nc % c
        for r in range(ho):
            for q in range(wo):
                k = idx[i, ch, r, q]
                dx[i, ch, 2 * r + k // 2, 2 * q + k % 2] = dy[i, ch, r, q]
    return dx
