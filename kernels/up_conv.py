"""2x2 up-convolution on the CPU: the Numba twin of tinyunet.ops.up_conv2x2 (same signatures, the
same numbers up to the order of the sums; tests/test_kernels_conv.py checks them).

The readable op is one GEMM and a reshuffle; so is this, with the GEMM on the direct kernel's
register tiles (a 1x1 convolution is conv_rows with one term per input channel) and both on the
CPU engine's threads:

    z[4f + 2a + d] = sum over c of w[c, f, a, d] * x[c]        (4F maps of H x W, `conv_rows`)
    y[f, 2i + a, 2j + d] = z[4f + 2a + d, i, j] + b[f]          (`scatter`: lanes interleaved)

Backward: dz gathered from dy (`gather`, the even and odd lanes of each row; db summed there),
dx = the 1x1 convolution of dz with w as (C, 4F), dw = x @ dz^T (C, 4F) as one BLAS product per
image (BLAS on one thread: engine.py). Threads split rows or filters, never a sum.
"""
import numpy as np
from numba import njit

from ..ops.up_conv2x2 import check_shapes
from . import threads
from .conv_relu import _split, conv_rows, pack
from .simd import lanes, vadd, vbcast, vevens, vload, vodds, vstore, vsum, vzero, vzip_hi, vzip_lo


def forward(x, w, b):
    """x (N, C, H, W), w (C, F, 2, 2), b (F,) -> (y (N, F, 2H, 2W), cache = (x, w))."""
    check_shapes(x, w, b)
    x = np.ascontiguousarray(x)
    n, c, h, wd = x.shape
    f = w.shape[1]
    z = np.empty((n, 4 * f, h, wd), x.dtype)
    _one_by_one(x, pack(w.reshape(c, 4 * f).T), z)
    y = np.empty((n, f, 2 * h, 2 * wd), x.dtype)
    b = b.astype(x.dtype, copy=False)
    threads.parallel_runs(lambda t, run: [scatter(z, b, y, f0, f1) for f0, f1 in run],
                          _split(f, min(f, 4 * threads.THREADS)))
    return y, (x, w)


def backward(dy, cache):
    """dy (N, F, 2H, 2W) -> (dx (N, C, H, W), dw (C, F, 2, 2), db (F,))."""
    x, w = cache
    n, c, h, wd = x.shape
    f = w.shape[1]
    dy = np.ascontiguousarray(dy)
    dz = np.empty((n, 4 * f, h, wd), dy.dtype)
    db = np.zeros(f, dy.dtype)
    threads.parallel_runs(lambda t, run: [gather(dy, dz, db, f0, f1) for f0, f1 in run],
                          _split(f, min(f, 4 * threads.THREADS)))
    dx = np.empty(x.shape, dy.dtype)
    _one_by_one(dz, pack(w.reshape(c, 4 * f)), dx)
    dw = np.zeros((c, 4 * f), dy.dtype)
    for i in range(n):                                # images in order: a fixed sum
        dw += x[i].reshape(c, h * wd) @ dz[i].reshape(4 * f, h * wd).T
    return dx, dw.reshape(w.shape), db


def _one_by_one(x, wp, y):
    """y (N, F, H, W) = the 1x1 convolution of x (N, C, H, W) with packed weights (no bias)."""
    n, c, h, wd = x.shape
    offs = np.arange(c) * (h * wd)
    zeros = np.zeros(y.shape[1], x.dtype)
    pieces = [(i, r0, r1) for i in range(n) for r0, r1 in _split(h, threads.THREADS)]
    threads.parallel_runs(lambda t, run: [conv_rows(x[i], offs, wp, zeros, y[i], r0, r1, False)
                                          for i, r0, r1 in run], pieces)


@njit(nogil=True, cache=True)
def scatter(z, b, y, f0, f1):
    """y[:, f, 2i + a, 2j + d] = z[:, 4f + 2a + d, i, j] + b[f] for filters f0..f1-1."""
    n_, _, h, w = z.shape
    L = lanes(z.dtype)
    zf, yf = z.ravel(), y.ravel()
    nv = w // L
    for i in range(n_):
        for f in range(f0, f1):
            bf = vbcast(b, f)
            for a in range(2):
                for r in range(h):
                    p = ((i * z.shape[1] + 4 * f + 2 * a) * h + r) * w      # z[i, 4f+2a, r]
                    q = p + h * w                                          # z[i, 4f+2a+1, r]
                    o = ((i * y.shape[1] + f) * 2 * h + 2 * r + a) * 2 * w    # y[i, f, 2r+a]
                    for k in range(nv):
                        j = k * L
                        e, d = vadd(vload(zf, p + j), bf), vadd(vload(zf, q + j), bf)
                        vstore(yf, o + 2 * j, vzip_lo(e, d))
                        vstore(yf, o + 2 * j + L, vzip_hi(e, d))
                    for j in range(nv * L, w):
                        yf[o + 2 * j] = zf[p + j] + b[f]
                        yf[o + 2 * j + 1] = zf[q + j] + b[f]


@njit(nogil=True, cache=True)
def gather(dy, dz, db, f0, f1):
    """dz[:, 4f + 2a + d, i, j] = dy[:, f, 2i + a, 2j + d] and db[f] = the sum of dy[:, f] (lanes
    summed once per row), for filters f0..f1-1."""
    n_, _, h, w = dz.shape
    L = lanes(dy.dtype)
    gf, zf = dy.ravel(), dz.ravel()
    nv = w // L
    for f in range(f0, f1):
        s = 0.0
        for i in range(n_):
            for a in range(2):
                for r in range(h):
                    p = ((i * dz.shape[1] + 4 * f + 2 * a) * h + r) * w
                    q = p + h * w
                    o = ((i * dy.shape[1] + f) * 2 * h + 2 * r + a) * 2 * w
                    acc = vzero(dy.dtype)
                    for k in range(nv):
                        j = k * L
                        lo, hi = vload(gf, o + 2 * j), vload(gf, o + 2 * j + L)
                        e, d = vevens(lo, hi), vodds(lo, hi)
                        vstore(zf, p + j, e)
                        vstore(zf, q + j, d)
                        acc = vadd(acc, vadd(e, d))
                    t = vsum(acc)
                    for j in range(nv * L, w):
                        zf[p + j] = gf[o + 2 * j]
                        zf[q + j] = gf[o + 2 * j + 1]
                        t += gf[o + 2 * j] + gf[o + 2 * j + 1]
                    s += t
        db[f] = s
