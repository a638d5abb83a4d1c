"""Centre crop and concatenation on the CPU: the Numba twin of tinyunet.ops.crop_and_concat (same
signatures, the same numbers: it only copies), the channels split among the CPU engine's threads.

Forward: y[:, :C1] = the skip map's centre crop, y[:, C1:] = the upsampled map, row by row into
one output. Backward: dskip is zero outside the crop and dy[:, :C1] inside, written in one pass
(the readable op fills zeros first, then copies); dup is dy[:, C1:], a view.
"""
import numpy as np
from numba import njit

from ..ops.crop_and_concat import check_batch, crop_offsets
from . import threads
from .conv_relu import _split


def forward(skip, up):
    """skip (N, C1, Hs, Ws), up (N, C2, H, W) -> (y (N, C1 + C2, H, W), cache)."""
    check_batch(skip, up)
    n, c1 = skip.shape[:2]
    c2, h, w = up.shape[1:]
    top, left = crop_offsets(skip.shape[2:], (h, w))
    y = np.empty((n, c1 + c2, h, w), up.dtype)
    skip, up = np.ascontiguousarray(skip), np.ascontiguousarray(up)
    threads.parallel_runs(lambda t, run: [_forward(skip, up, y, top, left, c0, c1_)
                                          for c0, c1_ in run],
                          _split(c1 + c2, min(c1 + c2, 4 * threads.THREADS)))
    return y, (skip.shape, top, left)


def backward(dy, cache):
    """dy (N, C1 + C2, H, W) -> (dskip (N, C1, Hs, Ws), zero outside the crop; dup (N, C2, H,
    W))."""
    skip_shape, top, left = cache
    c1 = skip_shape[1]
    dy = np.ascontiguousarray(dy)
    dskip = np.empty(skip_shape, dy.dtype)
    threads.parallel_runs(lambda t, run: [_backward(dy, dskip, top, left, c0, c1_)
                                          for c0, c1_ in run],
                          _split(c1, min(c1, 4 * threads.THREADS)))
    return dskip, dy[:, c1:]


@njit(nogil=True, cache=True)
def _forward(skip, up, y, top, left, c0, c1_):
    """Channels c0..c1_-1 of y."""
    c1 = skip.shape[1]
    h, w = y.shape[2], y.shape[3]
    for i in range(y.shape[0]):
        for c in range(c0, c1_):
            for r in range(h):
                if c < c1:
                    y[i, c, r] = skip[i, c, top + r, left:left + w]
                else:
                    y[i, c, r] = up[i, c - c1, r]


@njit(nogil=True, cache=True)
def _backward(dy, dskip, top, left, c0, c1_):
    """Channels c0..c1_-1 of dskip: dy's rows inside the crop, zeros around them."""
    h, w = dy.shape[2], dy.shape[3]
    hs = dskip.shape[2]
    for i in range(dy.shape[0]):
        for c in range(c0, c1_):
            for r in range(hs):
                row = dskip[i, c, r]
                if top <= r < top + h:
                    row[:left] = 0
                    row[left:left + w] = dy[i, c, r - top]
                    row[left + w:] = 0
                else:
                    row[:] = 0
