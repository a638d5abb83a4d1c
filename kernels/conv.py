"""CPU kernels for the training step: the 3x3 convolution + bias + ReLU in row bands, 2x2 max pooling.

The readable ops in tinyunet/ (conv3x3.py, relu.py, max_pool2x2.py) are the reference; these compute
the same numbers faster on the CPU, and tests/test_kernels_conv.py checks the one against the other.
CuPy arrays never come here: on the GPU the model runs the readable ops.

Why bands. A layer's im2col columns are 9x its input (186 MiB for the first layers of the paper's
network at 572x572). Building them for the whole image writes them to memory and reads them back
for the GEMM, and keeping them for the backward pass costs more memory than all the activations.
Instead, each call walks the output rows in bands: im2col of one band into a small workspace
(about `BAND_BYTES`, so it is still in the cache when the GEMM reads it), one GEMM, bias + ReLU on
the band while it is hot. The backward pass recomputes the band's columns from the layer's input
(which the network keeps anyway: it is the previous layer's output), so nothing column-sized
outlives a call. Per band, dw += dz @ cols^T, and dx gets the adjoint of im2col (col2im) of
w^T @ dz. Bands are made of full input-width rows (see im2col_band), so every copy is one
contiguous slice per (channel, tap).

Threads: one fork and one join per layer. The bands of a call are split into one contiguous run
per thread; each thread does its runs' copies and GEMMs (Numba kernels that release the GIL,
BLAS held to one thread meanwhile) in its own slice of the workspace, with its own partial dw and
db, summed in a fixed order after the join (so the numbers do not depend on timing). Only the
first band of a run can share input rows with another thread's band in dx (the 2 rows that two
neighbouring bands both touch): that band adds into a private halo, added after the join. Fine-
grained alternatives (a parallel loop inside every copy, threaded BLAS per band) synchronise
the threads thousands of times per step, and on a busy machine every synchronisation waits for
a time slice: on this project's 2-core machine with other work running, a training step of
the base-16 network took 24.5 s that way against 4.7 s this way (and PyTorch's 6.4 s).
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit

BAND_BYTES = 1 << 20        # columns of one band: ~1 MiB, fits the per-core L2 cache
MIN_BAND_COLS = 2048        # but at least this many GEMM columns (deep layers: few, wide rows)
MAX_BAND_BYTES = 8 << 20    # and never more than 8 MiB of columns (the workspace's size)
DX = "col2im"               # how the backward pass makes dx: "col2im" or "correlation" (below)
THREADS = numba.config.NUMBA_NUM_THREADS   # the CPU's cores, or $NUMBA_NUM_THREADS


@njit(nogil=True, cache=True)
def im2col_band(x, r0, r1, cols):
    """x (C, H, W) -> cols (C*9, (r1-r0)*W): the columns of output rows r0..r1-1, in full rows.

    cols[c*9 + a*3 + d, (i - r0)*W + j] = x[c, i + a, j + d] for j < W' = W - 2: as in
    tinyunet.conv3x3.im2col, except that each row of the band is W wide, not W'. Then the 9C
    rows of cols are plain contiguous slices of x (one copy each, no per-row loop); the two extra
    columns per row (j = W', W'+1) hold values from the next row, which the caller discards
    (forward) or multiplies by zeros (backward). Past the end of x they are set to 0.
    """
    c_, h, w = x.shape
    n = (r1 - r0) * w
    xf = x.reshape(c_, h * w)
    for k in range(c_ * 9):                  # one column row per (channel, tap)
        c, a, d = k // 9, (k % 9) // 3, k % 3
        s = (r0 + a) * w + d
        m = min(n, h * w - s)
        cols[k, :m] = xf[c, s:s + m]
        cols[k, m:] = 0


@njit(nogil=True, cache=True)
def col2im_band_add(dcols, r0, r1, dx):
    """dx (C, H, W) += the adjoint of im2col_band(., r0, r1): each column row added back into
    place as one contiguous slice. The two extra columns per row of dcols must be 0 (they are:
    they come from zero columns of dz), so adding them where they land changes nothing.
    (A private halo of rows r0 .. r1+1 is the call with r0 = 0, r1 = r1 - r0.)"""
    c_, h, w = dx.shape
    n = (r1 - r0) * w
    dxf = dx.reshape(c_, h * w)
    for c in range(c_):
        for t in range(9):
            s = (r0 + t // 3) * w + t % 3
            m = min(n, h * w - s)
            dxf[c, s:s + m] += dcols[c * 9 + t, :m]


@njit(nogil=True, cache=True)
def bias_relu_band(yb, b, r0, r1, y):
    """y[f, i, j] = max(yb[f, (i - r0)*W + j] + b[f], 0) for rows r0..r1-1, j < W'.

    yb (F, (r1-r0)*W) is a band of GEMM output in full rows; y (F, H', W') the layer's output."""
    f_, ho, wo = y.shape
    w = wo + 2
    for f in range(f_):
        bf = b[f]
        for i in range(r0, r1):
            o = (i - r0) * w
            for j in range(wo):
                v = yb[f, o + j] + bf
                y[f, i, j] = v if v > 0 else 0


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def relu_grad_band(dy, y, r0, r1, dzb, db):
    """dzb[f, (i - r0)*W + j] = dy[f, i, j] where y > 0, else 0 (and 0 in the two extra
    columns); db[f] += the band's sum of dz. dy and y (F, H', W').

    y > 0 exactly where the pre-activation was > 0: ReLU's gradient at 0 is 0, as in relu.py.
    (fastmath 'reassoc' only lets the db sum be vectorised.)"""
    f_, ho, wo = y.shape
    w = wo + 2
    for f in range(f_):
        s = 0.0
        for i in range(r0, r1):
            o = (i - r0) * w
            for j in range(wo):
                g = dy[f, i, j] if y[f, i, j] > 0 else 0.0
                dzb[f, o + j] = g
                s += g
            dzb[f, o + wo] = 0
            dzb[f, o + wo + 1] = 0
        db[f] += s


@njit(nogil=True, cache=True)
def pad_band(dzb, r0, r1, dzp):
    """dzp[f, i + 2, j + 2] = dzb[f, (i - r0)*W + j] for rows r0..r1-1, j < W' (W = W' + 2):
    a band of dz into the zero-padded dz (F, H'+4, W'+4) of the full correlation."""
    f_, hp, wp = dzp.shape
    wo = wp - 4
    w = wo + 2
    for f in range(f_):
        for i in range(r0, r1):
            o = (i - r0) * w
            for j in range(wo):
                dzp[f, i + 2, j + 2] = dzb[f, o + j]


@njit(nogil=True, cache=True)
def crop_band(yb, r0, r1, y):
    """y[c, i, j] = yb[c, (i - r0)*(W+2) + j] for rows r0..r1-1, j < W: a band of GEMM output in
    full rows (two extra columns per row) into its place in y (C, H, W)."""
    c_, h, w = y.shape
    wp = w + 2
    for c in range(c_):
        for i in range(r0, r1):
            o = (i - r0) * wp
            for j in range(w):
                y[c, i, j] = yb[c, o + j]


def band_rows(c, w, itemsize, ho, threads=1):
    """Output rows per band: columns of about BAND_BYTES, but >= MIN_BAND_COLS GEMM columns
    (a GEMM of few columns re-reads the whole weight matrix for little work), at most
    MAX_BAND_BYTES of columns (the deep layers' 9C rows are long: the workspace would grow to
    hundreds of MiB for the paper's network), and at least one band per thread."""
    row = 9 * c * w * itemsize                        # bytes of columns per output row
    rows = max(BAND_BYTES // row, -(-MIN_BAND_COLS // w))
    rows = min(rows, MAX_BAND_BYTES // row, -(-ho // threads))
    return max(1, rows)


_POOL = None                # the worker threads (THREADS - 1 of them), made on first use
_POOL_LOCK = threading.Lock()
_BLAS = None                # threadpoolctl's controllers of the process's BLAS libraries


@contextmanager
def blas_threads(n):
    """Hold every BLAS library of the process to n threads (threadpoolctl) for the block.

    UNet holds BLAS to one thread for a whole forward and backward on the CPU: the kernels'
    own threads do the parallel work, and OpenBLAS's threads, once woken by a multithreaded
    GEMM, spin for a while after it and take a core from them (measured: a 2-thread step took
    longer than a 1-thread one until BLAS was held for the whole step)."""
    from threadpoolctl import ThreadpoolController
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
    libs = _BLAS
    old = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, k in zip(libs, old):
            lib.set_num_threads(k)


def parallel_runs(work, items, threads=None):
    """Split `items` into one contiguous run per thread and call work(t, run) for each, run 0 in
    this thread and the others in a pool, BLAS single-threaded meanwhile; returns the results in
    thread order. One fork and one join, whatever the number of items."""
    global _POOL
    threads = min(threads or THREADS, len(items)) or 1
    bounds = [len(items) * t // threads for t in range(threads + 1)]
    runs = [items[bounds[t]:bounds[t + 1]] for t in range(threads)]
    if threads == 1:
        return [work(0, runs[0])]
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads - 1:
            _POOL = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinyunet")
    with blas_threads(1):
        futures = [_POOL.submit(work, t, runs[t]) for t in range(1, threads)]
        first = work(0, runs[0])
        return [first] + [f.result() for f in futures]


def _conv_bands(x, w2, y, finish, workspace):
    """The banded valid 3x3 convolution of x (N, C, H, W) with w2 (F, C*9) into y (N, F, H-2,
    W-2): per band, im2col, one GEMM into the workspace, then finish(yb, r0, r1, y[i]) puts the
    band (F, rows*W, in full rows) into place."""
    n, c, h, wd = x.shape
    f, ho = w2.shape[0], h - 2
    rows = band_rows(c, wd, x.itemsize, ho, THREADS)
    bands = [(i, r0, min(r0 + rows, ho)) for i in range(n) for r0 in range(0, ho, rows)]
    size = c * 9 * rows * wd                          # one thread's columns; then its GEMM output
    per = size + f * rows * wd
    buf = workspace(per * min(THREADS, len(bands)))

    def work(t, run):
        mine = buf[t * per:(t + 1) * per]
        for i, r0, r1 in run:
            m = (r1 - r0) * wd
            cols = mine[:c * 9 * m].reshape(c * 9, m)
            yb = mine[size:size + f * m].reshape(f, m)
            im2col_band(x[i], r0, r1, cols)
            np.matmul(w2, cols, out=yb)                     # (F, band), still in the cache
            finish(yb, r0, r1, y[i])

    parallel_runs(work, bands)


def conv3x3_relu_forward(x, w, b, workspace):
    """y = relu(conv3x3(x, w) + b) for x (N, C, H, W) -> y (N, F, H-2, W-2), C-contiguous.

    `workspace(size)` returns a flat scratch array of at least `size` elements (x's dtype).
    """
    n, c, h, wd = x.shape
    f = w.shape[0]
    y = np.empty((n, f, h - 2, wd - 2), x.dtype)
    _conv_bands(np.ascontiguousarray(x), w.reshape(f, c * 9), y,
                lambda yb, r0, r1, yi: bias_relu_band(yb, b, r0, r1, yi), workspace)
    return y


def conv3x3_relu_backward(dy, x, y, w, workspace, need_dx=True):
    """dy = dL/dy for y = relu(conv3x3(x, w) + b) -> (dx (N, C, H, W) or None, dw, db).

    x and y are the forward's input and output (y gives the ReLU's mask); the columns of x are
    rebuilt band by band. need_dx=False skips dx (the network's input layer). dy is not changed.

    dx, two ways (DX). "col2im": dcols = w^T @ dz (C*9 rows per band), folded back into dx by
    col2im; a thread's first band adds into a halo, as two bands share 2 rows of dx. Each dx
    element is read and written 9 times. "correlation": dx is the full correlation of dz with
    the kernel, flipped and transposed: dx = conv3x3(pad(dz, 2), w'), w'[c, f, a, d] =
    w[f, c, 2-a, 2-d]: a second pass of bands over the rows of dx, im2col of the padded dz (F*9
    rows per band), one GEMM, each dx element written once, no halo. Measured against each other
    (python benchmarks/bench_dx.py, a training step at 572x572, 2 cores, three runs): base 16,
    correlation 0.512 / 0.528 / 0.534 s, col2im 0.527 / 0.538 / 0.499 s, a tie within the noise;
    base 64, correlation 4.34 / 4.60 / 5.15 s, col2im 4.10 / 4.45 / 4.82 s. So col2im is the
    default: as fast or faster, one pass, and no padded copy of dz.
    """
    n, c, h, wd = x.shape
    f = w.shape[0]
    ho, wo = h - 2, wd - 2
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    correlation = DX == "correlation"
    w2t = w.reshape(f, c * 9).T
    if need_dx:
        dx = np.empty(x.shape, x.dtype) if correlation else np.zeros(x.shape, x.dtype)
        dzp = np.zeros((n, f, ho + 4, wo + 4), x.dtype) if correlation else None
    else:
        dx = dzp = None
    rows = band_rows(c, wd, x.itemsize, ho, THREADS)
    bands = [(i, r0, min(r0 + rows, ho)) for i in range(n) for r0 in range(0, ho, rows)]
    size = c * 9 * rows * wd
    per = 2 * size + f * rows * wd                    # a thread's columns, dcols and dz
    buf = workspace(per * min(THREADS, len(bands)))

    def work(t, run):
        mine = buf[t * per:(t + 1) * per]
        dwt = np.zeros((c * 9, f), x.dtype)           # dw transposed, see below
        dwt_band = np.empty((c * 9, f), x.dtype)
        db = np.zeros(f, x.dtype)
        halo = None
        for i, r0, r1 in run:
            m = (r1 - r0) * wd
            dz = mine[2 * size:2 * size + f * m].reshape(f, m)
            relu_grad_band(dy[i], y[i], r0, r1, dz, db)           # (F, band), 0 past W'
            cols = mine[:c * 9 * m].reshape(c * 9, m)
            im2col_band(x[i], r0, r1, cols)                       # rebuilt, not kept
            # dw^T += cols @ dz^T (C*9, F): the same product as dz @ cols^T, but with the long
            # band as the inner dimension of a tall result, OpenBLAS runs it ~2x faster.
            np.matmul(cols, dz.T, out=dwt_band)
            dwt += dwt_band
            if need_dx and correlation:
                pad_band(dz, r0, r1, dzp[i])                      # for the second pass
            elif need_dx:
                dcols = mine[size:size + c * 9 * m].reshape(c * 9, m)
                np.matmul(w2t, dz, out=dcols)                     # (C*9, band)
                if t > 0 and halo is None and r0 > 0:             # rows r0, r0+1 are shared
                    halo = (i, r0, np.zeros((c, r1 - r0 + 2, wd), x.dtype))
                    col2im_band_add(dcols, 0, r1 - r0, halo[2])
                else:
                    col2im_band_add(dcols, r0, r1, dx[i])
            halo = halo or ()                         # only a run's first band may need one
        return dwt, db, halo

    parts = parallel_runs(work, bands)
    dwt, db = parts[0][0], parts[0][1]
    for part_dwt, part_db, halo in parts[1:]:         # a fixed order: reproducible sums
        dwt += part_dwt
        db += part_db
        if halo:
            i, r0, rows_ = halo
            dx[i, :, r0:r0 + rows_.shape[1]] += rows_
    if need_dx and correlation:
        _full_correlation(dzp, w, dx, workspace)
    return dx, np.ascontiguousarray(dwt.T).reshape(w.shape), db


def _full_correlation(dzp, w, dx, workspace):
    """dx (N, C, H, W) = conv3x3(dzp, w') with dzp (N, F, H+2, W+2) the zero-padded dz and
    w'[c, f, a, d] = w[f, c, 2-a, 2-d]: the forward pass's bands, without bias and ReLU."""
    f, c = w.shape[:2]
    wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, f * 9)
    _conv_bands(dzp, wflip, dx, crop_band, workspace)


@njit(nogil=True, cache=True)
def max_pool2x2_forward(x):
    """x (N, C, H, W), H and W even -> (y (N, C, H/2, W/2), idx uint8 0..3 of the winning corner).

    Ties go to the first maximum in row-major window order, as in tinyunet.max_pool2x2.
    """
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
def max_pool2x2_backward(dy, idx):
    """dy (N, C, H/2, W/2) -> dx (N, C, H, W): each dy to its window's winning corner, 0 elsewhere."""
    n, c, ho, wo = dy.shape
    dx = np.zeros((n, c, 2 * ho, 2 * wo), dy.dtype)
    for nc in range(n * c):
        i, ch = nc // c, nc % c
        for r in range(ho):
            for q in range(wo):
                k = idx[i, ch, r, q]
                dx[i, ch, 2 * r + k // 2, 2 * q + k % 2] = dy[i, ch, r, q]
    return dx
