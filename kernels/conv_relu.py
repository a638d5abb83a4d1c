"""3x3 convolution + bias + ReLU on the CPU, computed directly: the Numba twin of
tinyunet.ops.conv3x3_relu (same signatures, same numbers up to the order of the sums;
tests/test_kernels_conv.py checks the one against the other). engine.choose_engine runs it on
the CPU; CuPy arrays never come here.

No column matrix. The readable op copies the input nine times over (im2col) so that one GEMM can
do the work; the copy, and the packing a BLAS does on top of it, cost as much as the arithmetic in
the layers with few channels. Here the input is read where it lies: output pixel (i, j) of filter
f is

    y[f, i, j] = b[f] + sum over c, a, d of w[f, c, a, d] * x[c, i + a, j + d]

and for a row of pixels j..j+23 every term (c, a, d) reads 24 consecutive floats of x, starting at
offs[c*9 + a*3 + d] + i*W + j, offs = c*H*W + a*W + d (the im2col matrix's row, never built). The
work is done in register tiles (`_tile`): 4 filters x 24 pixels (12 vectors, kernels/simd.py) of
partial sums stay in registers while the kernel walks the 9C terms, each one vector load per 8
pixels and one broadcast per filter, 12 fused multiply-adds. The weights are packed once per call
as (F/4, 9C, 4), so a tile reads its 4 filters' weights in sequence.

Cache blocking: the 9C terms are taken KC input channels at a time (the tile's weights for a
chunk, 9*16*4 floats, stay in L1), over a band of output rows whose input rows fit BAND_BYTES (in
L2); the partial sums go to y between chunks. Deep layers (many channels, few pixels) thus read
their large weight matrix once per band instead of once per row.

The backward pass is the same kernel twice over, and one reduction:
  - dz = dy where y > 0 (ReLU), db = the sum of dz, written with a 2-pixel border of zeros
    (`relu_grad_pad`);
  - dx is a valid 3x3 convolution of that padded dz with the weights turned by 180 degrees and
    their two channel axes swapped: dx[c, i, j] = sum over f, a, d of
    w[f, c, 2 - a, 2 - d] * dzp[f, i + a, j + d]  (the same `conv_rows`, without bias or ReLU);
  - dw[f, c, a, d] = sum over i, j of dz[f, i, j] * x[c, i + a, j + d] (`dw_rows`): tiles of
    4 filters x the 3 taps d of one (c, a), vectors along the pixels, summed across the lanes once
    per band.

Threads (kernels/threads.py) share the work without sharing a sum: the forward pass and dx split
the output rows, dw and db the filters, and every output number is computed by one thread in an
order fixed by the layer's shape alone. So the numbers do not depend on the number of threads
(tests/test_kernels_conv.py checks 1, 2 and 3 threads bit for bit).
"""
import numpy as np
from numba import njit

from ..backend import scratch
from . import threads
from .simd import (ld, lanes, vadd, vbcast, vfma, vload, vload_n, vmax0, vstore, vstore_n,
                   vsum, vwhere_pos, vzero)

MR = 4                   # filters per register tile
NV = 3                   # vectors of pixels per register tile (24 float32 pixels)
KC = 16                  # input channels per pass over a tile's weights
BAND_BYTES = 128 << 10   # input rows of one channel chunk that a band keeps in the cache
FLAT_BYTES = 512 << 10   # a layer whose chunk of input (KC channels) fits L2 is computed flat
DW_BAND_BYTES = 48 << 10    # one channel of x and 4 filters' dz over a band of rows: in L1 or so
DW_MIN_PIXELS = 1024     # but at least this many pixels per band (a band ends in lane sums)


def forward(x, w, b, workspace=None, keep=True):
    """y = relu(conv3x3(x, w) + b) for x (N, C, H, W) -> (y (N, F, H-2, W-2), cache).

    cache = (x, w, y), or None when keep=False. (`workspace` is accepted for the readable op's
    signature; the forward pass needs no scratch memory.)"""
    x = np.ascontiguousarray(x)
    n, c, h, wd = x.shape
    f = w.shape[0]
    y = np.empty((n, f, h - 2, wd - 2), x.dtype)
    _conv(x, pack(w), b.astype(x.dtype, copy=False), y, True)
    return y, ((x, w, y) if keep else None)


def backward(dy, cache, workspace=None, input_grad=True):
    """dy = dL/dy -> (dx (N, C, H, W) or None, dw (F, C, 3, 3), db (F,)).

    cache = (x, w, y) from forward (y gives the ReLU's mask). input_grad=False skips dx (the
    network's input layer). dy is not changed. `workspace` holds the padded dz."""
    x, w, y = cache
    n, c, h, wd = x.shape
    f = w.shape[0]
    dy = np.ascontiguousarray(dy)
    fp = -(-f // MR) * MR                              # filters padded to whole tiles
    dzp = scratch(workspace, n * fp * (h + 2) * (wd + 2), x.dtype).reshape(n, fp, h + 2, wd + 2)
    db = np.zeros(f, x.dtype)
    groups = _split(fp, min(fp, 4 * threads.THREADS))
    threads.parallel_runs(lambda t, run: [relu_grad_pad(dy, y, dzp, db, f0, f1)
                                          for f0, f1 in run], groups)
    dw = np.zeros(w.shape, x.dtype)
    tiles = list(range(fp // MR))                      # a thread takes a run of filter tiles
    if flat(c, h, wd, x.itemsize):                     # x with 2 columns of zeros: dzp's rows
        xw = np.zeros((n, c, h, wd + 2), x.dtype)
        xw[..., :wd] = x
        threads.parallel_runs(lambda t, run: dw_flat(xw, dzp, dw, run[0], run[-1] + 1), tiles)
    else:
        threads.parallel_runs(lambda t, run: dw_rows(x, dzp, dw, run[0], run[-1] + 1), tiles)
    if not input_grad:
        return None, dw, db
    dx = np.empty(x.shape, x.dtype)
    _conv(dzp, pack(w, turned=True), np.zeros(c, x.dtype), dx, False, channels=f)
    return dx, dw, db


def pack(w, turned=False):
    """w (F, C, 3, 3), or any (F, K...) -> (ceil(F/4), K, 4) with K = 9C (or the product of the
    other axes): each tile's 4 filters side by side, zeros for the filters past F, so that a
    tile reads its weights in order. turned=True packs the weights of dx's convolution instead:
    w[f, c, 2 - a, 2 - d] as filter c, term (f, a, d)."""
    w = np.ascontiguousarray(w)
    f, k = w.shape[0], w[0].size
    if turned:
        c = w.shape[1]
        wp = np.empty((-(-c // MR), 9 * f, MR), w.dtype)
        _pack_turned(w, wp)
    else:
        wp = np.empty((-(-f // MR), k, MR), w.dtype)
        _pack(w.reshape(f, k), wp)
    return wp


@njit(nogil=True, cache=True)
def _pack(w, wp):
    for fb in range(wp.shape[0]):
        for k in range(wp.shape[1]):
            for m in range(MR):
                f = fb * MR + m
                wp[fb, k, m] = w[f, k] if f < w.shape[0] else 0


@njit(nogil=True, cache=True)
def _pack_turned(w, wp):
    f_, c_ = w.shape[0], w.shape[1]
    for cb in range(wp.shape[0]):
        for f in range(f_):
            for t in range(9):
                for m in range(MR):
                    c = cb * MR + m
                    wp[cb, f * 9 + t, m] = w[f, c, 2 - t // 3, 2 - t % 3] if c < c_ else 0


def _split(n, parts):
    """[(start, end)] of `parts` near-equal runs of range(n), the empty ones left out."""
    return [(n * p // parts, n * (p + 1) // parts) for p in range(parts)
            if n * p // parts < n * (p + 1) // parts]


def _conv(x, wp, b, y, relu, channels=None):
    """y (N, F, Ho, Wo) = the valid conv of x[:, :channels] (N, C', Ho+2, Wo+2) with the packed
    weights, + b, ReLU if relu; the output rows (or, computed flat, the filters) split among
    the threads."""
    n, cp, h, w = x.shape
    c = cp if channels is None else channels
    offs = offsets(c, h, w)
    f, ho, wo = y.shape[1:]
    if not flat(c, h, w, x.itemsize):
        pieces = [(i, r0, r1) for i in range(n) for r0, r1 in _split(ho, threads.THREADS)]
        threads.parallel_runs(lambda t, run: [conv_rows(x[i], offs, wp, b, y[i], r0, r1, relu)
                                              for i, r0, r1 in run], pieces)
        return
    # flat: the output rows as one row of Ho*W - 2 pixels, each W wide (the input's width; the
    # last 2 pixels of each row wrap into the next input row and are dropped by `compact`), so
    # that no row of a narrow layer ends in a short tile
    npx = ho * w - 2
    wide = np.empty((n, f, npx), x.dtype)
    pieces = [(i, f0, f1) for i in range(n) for f0, f1 in _split(wp.shape[0], threads.THREADS)]

    def work(t, run):
        for i, t0, t1 in run:
            f0, f1 = t0 * MR, min(f, t1 * MR)
            conv_rows(x[i].reshape(cp, 1, h * w), offs, wp[t0:t1], b[f0:f1],
                      wide[i, f0:f1].reshape(f1 - f0, 1, npx), 0, 1, relu)
            compact(wide[i], y[i], f0, f1, w)
    threads.parallel_runs(work, pieces)


def flat(c, h, w, itemsize):
    """Whether a layer of c input channels of h x w is computed flat: when a chunk of its input
    (KC channels, whole images) fits FLAT_BYTES, about the L2 cache."""
    return h * w * min(c, KC) * itemsize <= FLAT_BYTES


@njit(nogil=True, cache=True)
def compact(wide, y, f0, f1, w):
    """y[f, r, :] = wide[f, r*W : r*W + Wo] for filters f0..f1-1: the flat rows without the two
    pixels that wrap into the next row."""
    ho, wo = y.shape[1], y.shape[2]
    for f in range(f0, f1):
        for r in range(ho):
            y[f, r] = wide[f, r * w:r * w + wo]


def offsets(c, h, w):
    """offs[c*9 + a*3 + d] = c*H*W + a*W + d: where term (c, a, d) starts in the flat input."""
    k = np.arange(c * 9)
    return (k // 9) * (h * w) + (k % 9 // 3) * w + k % 3


@njit(nogil=True, cache=True)
def conv_rows(x, offs, wp, b, y, r0, r1, relu, kc=KC * 9):
    """y[:, r0:r1] = the valid 3x3 conv of x (C', H, W) over the terms offs (9C of them) with
    packed weights wp (F/4, 9C, 4), + b (F,), then max(., 0) if relu. y (F, H-2, W-2).

    The terms are taken kc at a time (KC input channels). With one output row and offs[k] =
    k * T this is a plain GEMM, y (F, 1, T) = W (F, K) @ x (K, 1, T): kernels/winograd.py."""
    f_, ho, wo = y.shape
    w = x.shape[2]
    k_ = offs.shape[0]
    xf, yf = x.ravel(), y.ravel()
    nr = NV * lanes(x.dtype)
    nb = wo // nr                                   # whole tiles per row, then a tail
    tail = wo - nb * nr
    rb = max(1, BAND_BYTES // (w * max(1, min(kc, k_) // 9) * x.itemsize) - 2)
    for b0 in range(r0, r1, rb):
        b1 = min(r1, b0 + rb)
        for k0 in range(0, k_, kc):
            k1 = min(k_, k0 + kc)
            first, last = k0 == 0, k1 == k_
            # the rows whose tail, read in whole vectors, would not run past the end of x
            safe = min(b1, (xf.size - ld(offs, k1 - 1) - nb * nr - nr) // w + 1)
            fbs = wp.shape[0]
            for fb in range(fbs):
                wq = wp[fb].ravel()
                for i in range(b0, b1):
                    for jb in range(nb):
                        _tile(xf, offs, k0, k1, wq, b, yf, fb * MR, i, jb * nr, w, f_, ho, wo,
                              first, last, relu)
                    if tail > lanes(x.dtype) and i < safe:
                        _tail(xf, offs, k0, k1, wq, b, yf, fb * MR, i, nb * nr, w, f_, ho, wo,
                              first, last, relu)
                    elif tail > 0 and i >= safe:
                        _tail_masked(xf, offs, k0, k1, wq, b, yf, fb * MR, i, nb * nr, w, f_,
                                     ho, wo, first, last, relu)
            if 0 < tail <= lanes(x.dtype):              # a short tail: 8 filters at a time
                for fb in range(0, fbs, 2):
                    wq, wr = wp[fb].ravel(), wp[min(fb + 1, fbs - 1)].ravel()
                    for i in range(b0, min(b1, safe)):
                        _tail8(xf, offs, k0, k1, wq, wr, b, yf, fb * MR, i, nb * nr, w, f_, ho,
                               wo, first, last, relu)


@njit(nogil=True, cache=True, inline="always")
def _tile(xf, offs, k0, k1, wq, b, yf, f, i, j0, w, f_, ho, wo, first, last, relu):
    """One register tile: filters f..f+3, pixels j0..j0+3L-1 of output row i, terms k0..k1-1.
    yf: y (F, Ho, Wo) flat; rows of filters past F are neither read nor written."""
    L = lanes(xf.dtype)
    y0 = (min(f, f_ - 1) * ho + i) * wo + j0        # where the tile's rows start in yf
    y1 = (min(f + 1, f_ - 1) * ho + i) * wo + j0
    y2 = (min(f + 2, f_ - 1) * ho + i) * wo + j0
    y3 = (min(f + 3, f_ - 1) * ho + i) * wo + j0
    if first:
        a00 = vzero(xf.dtype); a01 = vzero(xf.dtype); a02 = vzero(xf.dtype)
        a10 = vzero(xf.dtype); a11 = vzero(xf.dtype); a12 = vzero(xf.dtype)
        a20 = vzero(xf.dtype); a21 = vzero(xf.dtype); a22 = vzero(xf.dtype)
        a30 = vzero(xf.dtype); a31 = vzero(xf.dtype); a32 = vzero(xf.dtype)
    else:                                   # the partial sums of the chunks before
        a00 = vload(yf, y0); a01 = vload(yf, y0 + L); a02 = vload(yf, y0 + 2 * L)
        a10 = vload(yf, y1); a11 = vload(yf, y1 + L); a12 = vload(yf, y1 + 2 * L)
        a20 = vload(yf, y2); a21 = vload(yf, y2 + L); a22 = vload(yf, y2 + 2 * L)
        a30 = vload(yf, y3); a31 = vload(yf, y3 + L); a32 = vload(yf, y3 + 2 * L)
    base = i * w + j0
    q = k0 * MR
    for k in range(k0, k1):
        o = ld(offs, k) + base
        x0 = vload(xf, o); x1 = vload(xf, o + L); x2 = vload(xf, o + 2 * L)
        c = vbcast(wq, q)
        a00 = vfma(c, x0, a00); a01 = vfma(c, x1, a01); a02 = vfma(c, x2, a02)
        c = vbcast(wq, q + 1)
        a10 = vfma(c, x0, a10); a11 = vfma(c, x1, a11); a12 = vfma(c, x2, a12)
        c = vbcast(wq, q + 2)
        a20 = vfma(c, x0, a20); a21 = vfma(c, x1, a21); a22 = vfma(c, x2, a22)
        c = vbcast(wq, q + 3)
        a30 = vfma(c, x0, a30); a31 = vfma(c, x1, a31); a32 = vfma(c, x2, a32)
        q += MR
    if last:                                # the final sums: + bias, ReLU
        a00, a01, a02 = _finish3(a00, a01, a02, b, min(f, f_ - 1), relu)
        a10, a11, a12 = _finish3(a10, a11, a12, b, min(f + 1, f_ - 1), relu)
        a20, a21, a22 = _finish3(a20, a21, a22, b, min(f + 2, f_ - 1), relu)
        a30, a31, a32 = _finish3(a30, a31, a32, b, min(f + 3, f_ - 1), relu)
    if f < f_:
        vstore(yf, y0, a00); vstore(yf, y0 + L, a01); vstore(yf, y0 + 2 * L, a02)
    if f + 1 < f_:
        vstore(yf, y1, a10); vstore(yf, y1 + L, a11); vstore(yf, y1 + 2 * L, a12)
    if f + 2 < f_:
        vstore(yf, y2, a20); vstore(yf, y2 + L, a21); vstore(yf, y2 + 2 * L, a22)
    if f + 3 < f_:
        vstore(yf, y3, a30); vstore(yf, y3 + L, a31); vstore(yf, y3 + 2 * L, a32)


@njit(nogil=True, cache=True, inline="always")
def _finish3(v0, v1, v2, b, f, relu):
    bf = vbcast(b, f)
    v0, v1, v2 = vadd(v0, bf), vadd(v1, bf), vadd(v2, bf)
    if relu:
        v0, v1, v2 = vmax0(v0), vmax0(v1), vmax0(v2)
    return v0, v1, v2


@njit(nogil=True, cache=True, inline="always")
def _finish1(v, b, f, relu):
    v = vadd(v, vbcast(b, f))
    return vmax0(v) if relu else v


@njit(nogil=True, cache=True, inline="always")
def _tail(xf, offs, k0, k1, wq, b, yf, f, i, j0, w, f_, ho, wo, first, last, relu):
    """The last n = Wo - j0 pixels of output row i, fewer than a tile's, in 2 or 3 vectors
    (n > L): 4 filters x 2 or 3 vectors. The last vector reads past the row's end (those lanes
    are computed and never stored: the stores are masked), so the caller makes sure that it
    does not read past the end of x (else _tail_masked). (n <= L: _tail8.)"""
    L = lanes(xf.dtype)
    n = wo - j0 - L * ((wo - j0 - 1) // L)          # lanes of the last vector
    y0 = (min(f, f_ - 1) * ho + i) * wo + j0
    y1 = (min(f + 1, f_ - 1) * ho + i) * wo + j0
    y2 = (min(f + 2, f_ - 1) * ho + i) * wo + j0
    y3 = (min(f + 3, f_ - 1) * ho + i) * wo + j0
    base = i * w + j0
    q = k0 * MR
    if wo - j0 > 2 * L:                               # three vectors, the third masked
        if first:
            a00 = vzero(xf.dtype); a01 = vzero(xf.dtype); a02 = vzero(xf.dtype)
            a10 = vzero(xf.dtype); a11 = vzero(xf.dtype); a12 = vzero(xf.dtype)
            a20 = vzero(xf.dtype); a21 = vzero(xf.dtype); a22 = vzero(xf.dtype)
            a30 = vzero(xf.dtype); a31 = vzero(xf.dtype); a32 = vzero(xf.dtype)
        else:
            a00 = vload(yf, y0); a01 = vload(yf, y0 + L); a02 = vload_n(yf, y0 + 2 * L, n)
            a10 = vload(yf, y1); a11 = vload(yf, y1 + L); a12 = vload_n(yf, y1 + 2 * L, n)
            a20 = vload(yf, y2); a21 = vload(yf, y2 + L); a22 = vload_n(yf, y2 + 2 * L, n)
            a30 = vload(yf, y3); a31 = vload(yf, y3 + L); a32 = vload_n(yf, y3 + 2 * L, n)
        for k in range(k0, k1):
            o = ld(offs, k) + base
            x0 = vload(xf, o); x1 = vload(xf, o + L); x2 = vload(xf, o + 2 * L)
            c = vbcast(wq, q)
            a00 = vfma(c, x0, a00); a01 = vfma(c, x1, a01); a02 = vfma(c, x2, a02)
            c = vbcast(wq, q + 1)
            a10 = vfma(c, x0, a10); a11 = vfma(c, x1, a11); a12 = vfma(c, x2, a12)
            c = vbcast(wq, q + 2)
            a20 = vfma(c, x0, a20); a21 = vfma(c, x1, a21); a22 = vfma(c, x2, a22)
            c = vbcast(wq, q + 3)
            a30 = vfma(c, x0, a30); a31 = vfma(c, x1, a31); a32 = vfma(c, x2, a32)
            q += MR
        if last:
            a00, a01, a02 = _finish3(a00, a01, a02, b, min(f, f_ - 1), relu)
            a10, a11, a12 = _finish3(a10, a11, a12, b, min(f + 1, f_ - 1), relu)
            a20, a21, a22 = _finish3(a20, a21, a22, b, min(f + 2, f_ - 1), relu)
            a30, a31, a32 = _finish3(a30, a31, a32, b, min(f + 3, f_ - 1), relu)
        if f < f_:
            vstore(yf, y0, a00); vstore(yf, y0 + L, a01); vstore_n(yf, y0 + 2 * L, a02, n)
        if f + 1 < f_:
            vstore(yf, y1, a10); vstore(yf, y1 + L, a11); vstore_n(yf, y1 + 2 * L, a12, n)
        if f + 2 < f_:
            vstore(yf, y2, a20); vstore(yf, y2 + L, a21); vstore_n(yf, y2 + 2 * L, a22, n)
        if f + 3 < f_:
            vstore(yf, y3, a30); vstore(yf, y3 + L, a31); vstore_n(yf, y3 + 2 * L, a32, n)
    else:                                             # two vectors, the second masked
        if first:
            a00 = vzero(xf.dtype); a01 = vzero(xf.dtype); a10 = vzero(xf.dtype)
            a11 = vzero(xf.dtype); a20 = vzero(xf.dtype); a21 = vzero(xf.dtype)
            a30 = vzero(xf.dtype); a31 = vzero(xf.dtype)
        else:
            a00 = vload(yf, y0); a01 = vload_n(yf, y0 + L, n)
            a10 = vload(yf, y1); a11 = vload_n(yf, y1 + L, n)
            a20 = vload(yf, y2); a21 = vload_n(yf, y2 + L, n)
            a30 = vload(yf, y3); a31 = vload_n(yf, y3 + L, n)
        for k in range(k0, k1):
            o = ld(offs, k) + base
            x0 = vload(xf, o); x1 = vload(xf, o + L)
            c = vbcast(wq, q)
            a00 = vfma(c, x0, a00); a01 = vfma(c, x1, a01)
            c = vbcast(wq, q + 1)
            a10 = vfma(c, x0, a10); a11 = vfma(c, x1, a11)
            c = vbcast(wq, q + 2)
            a20 = vfma(c, x0, a20); a21 = vfma(c, x1, a21)
            c = vbcast(wq, q + 3)
            a30 = vfma(c, x0, a30); a31 = vfma(c, x1, a31)
            q += MR
        if last:
            g0, g1, g2, g3 = (min(f, f_ - 1), min(f + 1, f_ - 1), min(f + 2, f_ - 1),
                              min(f + 3, f_ - 1))
            a00, a01 = _finish1(a00, b, g0, relu), _finish1(a01, b, g0, relu)
            a10, a11 = _finish1(a10, b, g1, relu), _finish1(a11, b, g1, relu)
            a20, a21 = _finish1(a20, b, g2, relu), _finish1(a21, b, g2, relu)
            a30, a31 = _finish1(a30, b, g3, relu), _finish1(a31, b, g3, relu)
        if f < f_:
            vstore(yf, y0, a00); vstore_n(yf, y0 + L, a01, n)
        if f + 1 < f_:
            vstore(yf, y1, a10); vstore_n(yf, y1 + L, a11, n)
        if f + 2 < f_:
            vstore(yf, y2, a20); vstore_n(yf, y2 + L, a21, n)
        if f + 3 < f_:
            vstore(yf, y3, a30); vstore_n(yf, y3 + L, a31, n)


@njit(nogil=True, cache=True, inline="always")
def _tail8(xf, offs, k0, k1, wq, wr, b, yf, f, i, j0, w, f_, ho, wo, first, last, relu):
    """The last n = Wo - j0 <= L pixels of output row i: 8 filters (f..f+3 with weights wq,
    f+4..f+7 with wr) x 1 vector, so that 8 sums are in flight (4 would wait on the
    multiply-adds' latency). Reads past the row's end as _tail does; the stores are masked."""
    n = wo - j0
    base = i * w + j0
    y0 = (min(f, f_ - 1) * ho + i) * wo + j0
    y1 = (min(f + 1, f_ - 1) * ho + i) * wo + j0
    y2 = (min(f + 2, f_ - 1) * ho + i) * wo + j0
    y3 = (min(f + 3, f_ - 1) * ho + i) * wo + j0
    y4 = (min(f + 4, f_ - 1) * ho + i) * wo + j0
    y5 = (min(f + 5, f_ - 1) * ho + i) * wo + j0
    y6 = (min(f + 6, f_ - 1) * ho + i) * wo + j0
    y7 = (min(f + 7, f_ - 1) * ho + i) * wo + j0
    if first:
        a0 = vzero(xf.dtype); a1 = vzero(xf.dtype); a2 = vzero(xf.dtype); a3 = vzero(xf.dtype)
        a4 = vzero(xf.dtype); a5 = vzero(xf.dtype); a6 = vzero(xf.dtype); a7 = vzero(xf.dtype)
    else:
        a0 = vload_n(yf, y0, n); a1 = vload_n(yf, y1, n); a2 = vload_n(yf, y2, n)
        a3 = vload_n(yf, y3, n); a4 = vload_n(yf, y4, n); a5 = vload_n(yf, y5, n)
        a6 = vload_n(yf, y6, n); a7 = vload_n(yf, y7, n)
    q = k0 * MR
    for k in range(k0, k1):
        x0 = vload(xf, ld(offs, k) + base)
        a0 = vfma(vbcast(wq, q), x0, a0); a1 = vfma(vbcast(wq, q + 1), x0, a1)
        a2 = vfma(vbcast(wq, q + 2), x0, a2); a3 = vfma(vbcast(wq, q + 3), x0, a3)
        a4 = vfma(vbcast(wr, q), x0, a4); a5 = vfma(vbcast(wr, q + 1), x0, a5)
        a6 = vfma(vbcast(wr, q + 2), x0, a6); a7 = vfma(vbcast(wr, q + 3), x0, a7)
        q += MR
    _put1(yf, y0, a0, n, b, f, f_, last, relu)
    _put1(yf, y1, a1, n, b, f + 1, f_, last, relu)
    _put1(yf, y2, a2, n, b, f + 2, f_, last, relu)
    _put1(yf, y3, a3, n, b, f + 3, f_, last, relu)
    _put1(yf, y4, a4, n, b, f + 4, f_, last, relu)
    _put1(yf, y5, a5, n, b, f + 5, f_, last, relu)
    _put1(yf, y6, a6, n, b, f + 6, f_, last, relu)
    _put1(yf, y7, a7, n, b, f + 7, f_, last, relu)


@njit(nogil=True, cache=True)
def _tail_masked(xf, offs, k0, k1, wq, b, yf, f, i, j0, w, f_, ho, wo, first, last, relu):
    """As _tail, one masked vector at a time, reading nothing past the row's end: for the rows
    whose tail would read past the end of x."""
    L = lanes(xf.dtype)
    for j in range(j0, wo, L):
        n = min(L, wo - j)
        y0 = (min(f, f_ - 1) * ho + i) * wo + j
        y1 = (min(f + 1, f_ - 1) * ho + i) * wo + j
        y2 = (min(f + 2, f_ - 1) * ho + i) * wo + j
        y3 = (min(f + 3, f_ - 1) * ho + i) * wo + j
        if first:
            a0 = vzero(xf.dtype); a1 = vzero(xf.dtype); a2 = vzero(xf.dtype)
            a3 = vzero(xf.dtype)
        else:
            a0 = vload_n(yf, y0, n); a1 = vload_n(yf, y1, n); a2 = vload_n(yf, y2, n)
            a3 = vload_n(yf, y3, n)
        base = i * w + j
        q = k0 * MR
        for k in range(k0, k1):
            x0 = vload_n(xf, ld(offs, k) + base, n)
            a0 = vfma(vbcast(wq, q), x0, a0); a1 = vfma(vbcast(wq, q + 1), x0, a1)
            a2 = vfma(vbcast(wq, q + 2), x0, a2); a3 = vfma(vbcast(wq, q + 3), x0, a3)
            q += MR
        _put1(yf, y0, a0, n, b, f, f_, last, relu)
        _put1(yf, y1, a1, n, b, f + 1, f_, last, relu)
        _put1(yf, y2, a2, n, b, f + 2, f_, last, relu)
        _put1(yf, y3, a3, n, b, f + 3, f_, last, relu)


@njit(nogil=True, cache=True, inline="always")
def _put1(yf, o, v, n, b, f, f_, last, relu):
    if f < f_:
        if last:
            v = _finish1(v, b, f, relu)
        vstore_n(yf, o, v, n)


@njit(nogil=True, cache=True)
def relu_grad_pad(dy, y, dzp, db, f0, f1):
    """For filters f0..f1-1 of every image: dzp[n, f] = dy[n, f] where y[n, f] > 0, else 0, inside
    a 2-pixel border of zeros (filters past F: all zeros), and db[f] = its sum (lanes summed once
    per row, rows and images in order). dy, y (N, F, Ho, Wo); dzp (N, F', Ho+4, Wo+4)."""
    n_, f_, ho, wo = dy.shape
    L = lanes(dy.dtype)
    wp = wo + 4
    fp = dzp.shape[1]
    gf, mf, zf = dy.ravel(), y.ravel(), dzp.ravel()
    nv = wo // L                                      # whole vectors per row, then a tail
    for f in range(f0, f1):
        s = 0.0
        for i in range(n_):
            z0 = (i * fp + f) * (ho + 4) * wp         # dzp[i, f, 0, 0]
            if f >= f_:
                zf[z0:z0 + (ho + 4) * wp] = 0
                continue
            zf[z0:z0 + 2 * wp + 2] = 0                # the top border and row 2's left one
            for r in range(ho):
                o = ((i * f_ + f) * ho + r) * wo      # dy[i, f, r, 0]
                zo = z0 + (r + 2) * wp + 2            # dzp[i, f, r + 2, 2]
                acc = vzero(dy.dtype)
                for k in range(nv):
                    j = k * L
                    v = vwhere_pos(vload(mf, o + j), vload(gf, o + j))
                    vstore(zf, zo + j, v)
                    acc = vadd(acc, v)
                if nv * L < wo:
                    j, n = nv * L, wo - nv * L
                    v = vwhere_pos(vload_n(mf, o + j, n), vload_n(gf, o + j, n))
                    vstore_n(zf, zo + j, v, n)
                    acc = vadd(acc, v)
                s += vsum(acc)
                zf[zo + wo:zo + wo + 4] = 0           # this row's right border, the next's left
            zf[z0 + (ho + 2) * wp + 2:z0 + (ho + 4) * wp] = 0   # the bottom border
        if f < f_:
            db[f] = s


@njit(nogil=True, cache=True)
def dw_rows(x, dzp, dw, fb0, fb1, band_bytes=DW_BAND_BYTES, min_pixels=DW_MIN_PIXELS):
    """dw[f] = sum over images and pixels of dz[f, i, j] * x[c, i + a, j + d] for the filters of
    tiles fb0..fb1-1 (4 filters each). x (N, C, H, W); dzp (N, F', H+2, W+2) from relu_grad_pad;
    dw (F, C, 3, 3), zero on entry. Bands of rows (fixed by the shape) end in lane sums."""
    n_, c_, h, w = x.shape
    ho, wo = h - 2, w - 2
    wp = w + 2
    per_row = (w + MR * wp) * x.itemsize
    rb = max(1, band_bytes // per_row, -(-min_pixels // wo))
    xf = x.ravel()
    zf = dzp.ravel()
    fp = dzp.shape[1]
    plane = (h + 2) * wp
    for i in range(n_):
        for b0 in range(0, ho, rb):
            b1 = min(ho, b0 + rb)
            for fb in range(fb0, fb1):
                f = fb * MR
                zo = ((i * fp + f) * (h + 2) + b0 + 2) * wp + 2      # dzp[i, f, b0 + 2, 2]
                for c in range(c_):
                    for a in range(3):
                        xo = ((i * c_ + c) * h + b0 + a) * w          # x[i, c, b0 + a, 0]
                        _dw_tile(xf, zf, dw, f, c, a, xo, zo, w, wp, b1 - b0, wo, plane)


@njit(nogil=True, cache=True)
def dw_flat(xw, dzp, dw, fb0, fb1):
    """dw_rows for a narrow layer, each image as one flat row of Ho*(W+2) - 2 pixels: xw is x
    with two columns of zeros appended to each row (N, C, H, W+2), so that its rows are as wide
    as dzp's and dz's zero borders cancel the pixels that wrap from one row into the next."""
    n_, c_, h, wp = xw.shape
    xf = xw.ravel()
    zf = dzp.ravel()
    fp = dzp.shape[1]
    plane = (h + 2) * wp
    npx = (h - 2) * wp - 2
    for i in range(n_):
        for fb in range(fb0, fb1):
            f = fb * MR
            zo = ((i * fp + f) * (h + 2) + 2) * wp + 2                # dzp[i, f, 2, 2]
            for c in range(c_):
                for a in range(3):
                    xo = ((i * c_ + c) * h + a) * wp                  # xw[i, c, a, 0]
                    _dw_tile(xf, zf, dw, f, c, a, xo, zo, wp, wp, 1, npx, plane)


@njit(nogil=True, cache=True, inline="always")
def _dw_tile(xf, zf, dw, f, c, a, xo0, zo0, xstride, zstride, rows, n_, plane):
    """dw[f..f+3, c, a, 0..2] += the sums over `rows` rows of n_ pixels, the first at xf[xo0:]
    and zf[zo0:] (filter f; the next filters one plane of zf apart), in 12 vectors of partial
    sums."""
    L = lanes(xf.dtype)
    nv = n_ // L                                      # whole vectors per row, then a tail
    z = xf.dtype
    s00 = vzero(z); s01 = vzero(z); s02 = vzero(z)
    s10 = vzero(z); s11 = vzero(z); s12 = vzero(z)
    s20 = vzero(z); s21 = vzero(z); s22 = vzero(z)
    s30 = vzero(z); s31 = vzero(z); s32 = vzero(z)
    for r in range(rows):
        xo = xo0 + r * xstride
        zo = zo0 + r * zstride
        for v in range(nv):
            j = v * L
            x0 = vload(xf, xo + j); x1 = vload(xf, xo + j + 1); x2 = vload(xf, xo + j + 2)
            g = vload(zf, zo + j)
            s00 = vfma(g, x0, s00); s01 = vfma(g, x1, s01); s02 = vfma(g, x2, s02)
            g = vload(zf, zo + plane + j)
            s10 = vfma(g, x0, s10); s11 = vfma(g, x1, s11); s12 = vfma(g, x2, s12)
            g = vload(zf, zo + 2 * plane + j)
            s20 = vfma(g, x0, s20); s21 = vfma(g, x1, s21); s22 = vfma(g, x2, s22)
            g = vload(zf, zo + 3 * plane + j)
            s30 = vfma(g, x0, s30); s31 = vfma(g, x1, s31); s32 = vfma(g, x2, s32)
        if nv * L < n_:                               # the row's last pixels, masked
            j = nv * L
            n = n_ - j
            x0 = vload_n(xf, xo + j, n); x1 = vload_n(xf, xo + j + 1, n)
            x2 = vload_n(xf, xo + j + 2, n)
            g = vload_n(zf, zo + j, n)
            s00 = vfma(g, x0, s00); s01 = vfma(g, x1, s01); s02 = vfma(g, x2, s02)
            g = vload_n(zf, zo + plane + j, n)
            s10 = vfma(g, x0, s10); s11 = vfma(g, x1, s11); s12 = vfma(g, x2, s12)
            g = vload_n(zf, zo + 2 * plane + j, n)
            s20 = vfma(g, x0, s20); s21 = vfma(g, x1, s21); s22 = vfma(g, x2, s22)
            g = vload_n(zf, zo + 3 * plane + j, n)
            s30 = vfma(g, x0, s30); s31 = vfma(g, x1, s31); s32 = vfma(g, x2, s32)
    _dw_add(dw, f, c, a, s00, s01, s02)
    _dw_add(dw, f + 1, c, a, s10, s11, s12)
    _dw_add(dw, f + 2, c, a, s20, s21, s22)
    _dw_add(dw, f + 3, c, a, s30, s31, s32)


@njit(nogil=True, cache=True, inline="always")
def _dw_add(dw, f, c, a, s0, s1, s2):
    if f < dw.shape[0]:
        dw[f, c, a, 0] += vsum(s0)
        dw[f, c, a, 1] += vsum(s1)
        dw[f, c, a, 2] += vsum(s2)
