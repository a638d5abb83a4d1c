"""Winograd's minimal filtering F(2x2, 3x3) for the wide layers: the 3x3 convolution in 2.25x
fewer multiplications (Lavin and Gray, "Fast algorithms for convolutional neural networks",
CVPR 2016). kernels/conv_relu.py chooses it for the layers where it is faster (`USE`); the
numbers differ from the direct sum by rounding only (tests/test_kernels_conv.py bounds the
difference in float32 and float64).

Each 2x2 block of outputs, (i, j) = (2p + a, 2q + d), depends on the 4x4 patch of input rows
2p..2p+3 and columns 2q..2q+3. With the 4x4 transforms

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

the block is  Y = A^T [ sum over c of (G g[f, c] G^T) * (B^T d[c] B) ] A  (* lane by lane over
the 16 entries): 16 products per input channel where the direct sum has 36. Summed over the C
channels, entry xi of the bracket is one matrix product for all blocks at once:

    M[xi] (F, T) = U[xi] (F, C) @ V[xi] (C, T),   U = G g G^T,  V = B^T d B,  T = the blocks

done by conv_rows of kernels/conv_relu.py (the direct kernel, over one "row" of T blocks, its
terms the C rows of V[xi]). The transforms are additions only: `input_transform` (rows first,
then columns from the even and odd lanes of each row), `output_transform` (+ bias, ReLU).

Where it pays: the two transforms cost about as much per block as C or F multiply-adds, so the
layers with few channels gain nothing; float32 rounding grows by a few units (the transforms add
and subtract up to 9 terms). Blocks are transformed a band of block rows at a time (about
BAND_TILES blocks, so that a chunk of V stays in L2); the bands are split among the threads,
each with its own V and M, so again no number depends on the thread count.
"""
import numpy as np
from numba import njit

from . import threads
from .conv_relu import MR, conv_rows, pack
from .simd import (lanes, vadd, vbcast, vevens, vload, vload_n, vmax0, vodds, vstore, vstore_n,
                   vsub, vzip_hi, vzip_lo, vzero)

BAND_TILES = 48         # blocks per band: V and M of a band stay in L2 (2 register tiles)
KC_GEMM = 64            # rows of V[xi] per pass over a tile's weights


def transform_weights(w):
    """w (F, C, 3, 3) -> U packed for conv_rows: (16, ceil(F/4), C, 4), U[xi] = (G w G^T)[xi]."""
    f, c = w.shape[:2]
    up = np.zeros((16, -(-f // MR), c, MR), w.dtype)
    _weights(np.ascontiguousarray(w), up)
    return up


@njit(nogil=True, cache=True)
def _weights(w, up):
    """up[4a + d, f // 4, c, f % 4] = (G g G^T)[a, d] for g = w[f, c]."""
    f_, c_ = w.shape[0], w.shape[1]
    t = np.empty((4, 3), w.dtype)
    for f in range(f_):
        for c in range(c_):
            g = w[f, c]
            for j in range(3):                        # t = G g
                t[0, j] = g[0, j]
                t[1, j] = (g[0, j] + g[1, j] + g[2, j]) * 0.5
                t[2, j] = (g[0, j] - g[1, j] + g[2, j]) * 0.5
                t[3, j] = g[2, j]
            for a in range(4):                        # (G g) G^T
                up[4 * a, f // MR, c, f % MR] = t[a, 0]
                up[4 * a + 1, f // MR, c, f % MR] = (t[a, 0] + t[a, 1] + t[a, 2]) * 0.5
                up[4 * a + 2, f // MR, c, f % MR] = (t[a, 0] - t[a, 1] + t[a, 2]) * 0.5
                up[4 * a + 3, f // MR, c, f % MR] = t[a, 2]


def conv(x, w, b, y, relu, channels=None):
    """y (N, F, Ho, Wo) = the valid 3x3 conv of x[:, :channels] (N, C', Ho+2, Wo+2) with w
    (F, C, 3, 3), + b, then ReLU if relu: what conv_relu._conv computes, by Winograd."""
    n = x.shape[0]
    c = x.shape[1] if channels is None else channels
    f, ho, wo = y.shape[1:]
    up = transform_weights(w)
    th, tw = -(-ho // 2), -(-wo // 2)
    cols = min(tw, BAND_TILES)                       # a band: rows x cols blocks
    rows = max(1, min(th, BAND_TILES // tw))
    nt = rows * cols
    L = 32 // x.itemsize
    width = 2 * (-(-cols // L) * L) + 2 * L + 2       # a row buffer: whole vectors of blocks
    pieces = [(i, p0, p1) for i in range(n) for p0, p1 in _runs(th, rows, threads.THREADS)]

    def work(t, run):
        v = np.empty(16 * c * nt, x.dtype)
        m = np.empty(16 * f * nt, x.dtype)
        r = np.zeros((4, width), x.dtype)
        for i, p0, p1 in run:
            _bands(x[i], c, up, b, y[i], p0, p1, rows, cols, tw, v, m, r, relu)
    threads.parallel_runs(work, pieces)


def _runs(th, rows, parts):
    """Block rows 0..th-1 split into `parts` runs of whole bands (`rows` block rows each)."""
    bands = -(-th // rows)
    return [(rows * (bands * p // parts), min(th, rows * (bands * (p + 1) // parts)))
            for p in range(parts) if bands * p // parts < bands * (p + 1) // parts]


@njit(nogil=True, cache=True)
def _bands(x, c, up, b, y, p0, p1, rows, cols, tw, v, m, r, relu):
    """Block rows p0..p1-1 of one image, a band of rows x cols blocks at a time: V, the 16
    products, Y. v, m: flat scratch for one band."""
    f = y.shape[0]
    zeros = np.zeros(f, x.dtype)
    for b0 in range(p0, p1, rows):
        b1 = min(p1, b0 + rows)
        for q0 in range(0, tw, cols):
            q1 = min(tw, q0 + cols)
            nt = (b1 - b0) * (q1 - q0)
            input_transform(x, c, b0, b1, q0, q1, v, r)
            offs = np.arange(c) * nt
            for xi in range(16):
                vx = v[xi * c * nt:(xi + 1) * c * nt].reshape((c, 1, nt))
                mx = m[xi * f * nt:(xi + 1) * f * nt].reshape((f, 1, nt))
                conv_rows(vx, offs, up[xi], zeros, mx, 0, 1, False, KC_GEMM)
            output_transform(m, b, y, b0, b1, q0, q1, relu)


@njit(nogil=True, cache=True)
def input_transform(x, c_, p0, p1, q0, q1, v, r):
    """v (16, C, T) flat, T = (p1 - p0) * (q1 - q0): v[4a + d, c, (p - p0) * (q1 - q0) + q - q0]
    = (B^T d B)[a, d] of the patch at rows 2p.., columns 2q.. of channel c, for the blocks
    p0..p1-1 x q0..q1-1 (input past the image's edge counts as 0).

    Rows first: R_a = (B^T d)[a] for the 4 input rows of block row p, whole rows at once, into
    r (4, width), zero past the image's width. Then columns: for L blocks q.. the even and odd
    lanes E, O of R_a[2q..] and E', O' of R_a[2q+2..] give
    (R_a B)[:, 0..3] = E - E', O + E', E' - O, O - O'."""
    h, w = x.shape[1], x.shape[2]
    L = lanes(x.dtype)
    tw = q1 - q0
    nt = (p1 - p0) * tw
    xf = x.ravel()
    rf = r.ravel()
    width = r.shape[1]
    for c in range(c_):
        for p in range(p0, p1):
            _rows(xf, c * h * w, 2 * p, 2 * q0, min(w, 2 * q1 + 2), h, w, rf, width)
            t0 = c * nt + (p - p0) * tw
            for q in range(0, tw, L):
                n = min(L, tw - q)
                for a in range(4):
                    ra = a * width + 2 * q
                    lo, hi = vload(rf, ra), vload(rf, ra + L)
                    e0, o0 = vevens(lo, hi), vodds(lo, hi)
                    lo, hi = vload(rf, ra + 2), vload(rf, ra + 2 + L)
                    e1, o1 = vevens(lo, hi), vodds(lo, hi)
                    o = (4 * a) * c_ * nt + t0 + q
                    vstore_n(v, o, vsub(e0, e1), n)
                    vstore_n(v, o + c_ * nt, vadd(o0, e1), n)
                    vstore_n(v, o + 2 * c_ * nt, vsub(e1, o0), n)
                    vstore_n(v, o + 3 * c_ * nt, vsub(o0, o1), n)


@njit(nogil=True, cache=True, inline="always")
def _rows(xf, o, i, j0, j1, h, w, rf, width):
    """r[0..3, :j1-j0] = d0 - d2, d1 + d2, d2 - d1, d1 - d3 of columns j0..j1-1 of the input rows
    d_k = x[i + k] of the channel at xf[o:] (0 past the last row), 0 after them."""
    L = lanes(xf.dtype)
    z = vzero(xf.dtype)
    for j in range(0, width, L):
        n = max(0, min(L, j1 - j0 - j))
        d0 = vload_n(xf, o + i * w + j0 + j, n) if i < h else z
        d1 = vload_n(xf, o + (i + 1) * w + j0 + j, n) if i + 1 < h else z
        d2 = vload_n(xf, o + (i + 2) * w + j0 + j, n) if i + 2 < h else z
        d3 = vload_n(xf, o + (i + 3) * w + j0 + j, n) if i + 3 < h else z
        m = min(L, width - j)
        vstore_n(rf, j, vsub(d0, d2), m)
        vstore_n(rf, width + j, vadd(d1, d2), m)
        vstore_n(rf, 2 * width + j, vsub(d2, d1), m)
        vstore_n(rf, 3 * width + j, vsub(d1, d3), m)


@njit(nogil=True, cache=True)
def output_transform(m, b, y, p0, p1, q0, q1, relu):
    """y[f, 2p + a, 2q + d] = (A^T M A)[a, d] + b[f] (then ReLU) for the blocks p0..p1-1 x
    q0..q1-1, from m (16, F, T) flat = the 16 entries of every block's sum; outputs past y's
    edge are not written."""
    f_, ho, wo = y.shape
    L = lanes(y.dtype)
    tw = q1 - q0
    nt = (p1 - p0) * tw
    s = f_ * nt                                       # from one entry xi to the next
    yf = y.ravel()
    for f in range(f_):
        bf = vbcast(b, f)
        for p in range(p0, p1):
            for q in range(0, tw, L):
                n = min(L, tw - q)
                o = f * nt + (p - p0) * tw + q
                m0, m1, m2, m3 = (vload_n(m, o, n), vload_n(m, o + s, n),
                                  vload_n(m, o + 2 * s, n), vload_n(m, o + 3 * s, n))
                m4, m5, m6, m7 = (vload_n(m, o + 4 * s, n), vload_n(m, o + 5 * s, n),
                                  vload_n(m, o + 6 * s, n), vload_n(m, o + 7 * s, n))
                m8, m9, m10, m11 = (vload_n(m, o + 8 * s, n), vload_n(m, o + 9 * s, n),
                                    vload_n(m, o + 10 * s, n), vload_n(m, o + 11 * s, n))
                m12, m13, m14, m15 = (vload_n(m, o + 12 * s, n), vload_n(m, o + 13 * s, n),
                                      vload_n(m, o + 14 * s, n), vload_n(m, o + 15 * s, n))
                # (A^T M)[a, j] for the 4 columns j: rows 0 + 1 + 2 (a = 0), 1 - 2 - 3 (a = 1)
                s0, s1 = vadd(vadd(m0, m4), m8), vadd(vadd(m1, m5), m9)
                s2, s3 = vadd(vadd(m2, m6), m10), vadd(vadd(m3, m7), m11)
                u0, u1 = vsub(vsub(m4, m8), m12), vsub(vsub(m5, m9), m13)
                u2, u3 = vsub(vsub(m6, m10), m14), vsub(vsub(m7, m11), m15)
                # then (. A)[a, d]: columns 0 + 1 + 2 (d = 0), 1 - 2 - 3 (d = 1)
                y00 = vadd(vadd(vadd(s0, s1), s2), bf)
                y01 = vadd(vsub(vsub(s1, s2), s3), bf)
                y10 = vadd(vadd(vadd(u0, u1), u2), bf)
                y11 = vadd(vsub(vsub(u1, u2), u3), bf)
                if relu:
                    y00, y01, y10, y11 = vmax0(y00), vmax0(y01), vmax0(y10), vmax0(y11)
                j = 2 * (q0 + q)                       # output columns j .. j + 2L - 1
                _put_row(yf, (f * ho + 2 * p) * wo, j, vzip_lo(y00, y01), vzip_hi(y00, y01),
                         wo)
                if 2 * p + 1 < ho:
                    _put_row(yf, (f * ho + 2 * p + 1) * wo, j, vzip_lo(y10, y11),
                             vzip_hi(y10, y11), wo)


@njit(nogil=True, cache=True, inline="always")
def _put_row(yf, row, j, lo, hi, wo):
    """Columns j .. j + 2L - 1 of the output row at yf[row:], those < Wo."""
    L = lanes(yf.dtype)
    vstore_n(yf, row + j, lo, min(L, wo - j))
    if j + L < wo:
        vstore_n(yf, row + j + L, hi, min(L, wo - j - L))
