"""3x3 convolution + bias + ReLU on the CPU, in row bands: the Numba twin of
tinyunet.ops.conv3x3_relu (same signatures, same numbers; tests/test_kernels_conv.py checks the
one against the other). engine.choose_engine runs it on the CPU; CuPy arrays never come here.

Why bands. A layer's im2col columns are 9x its input (186 MiB for the first layers of the paper's
network at 572x572). Building them for the whole image writes them to memory and reads them back
for the GEMM, and keeping them for the backward pass costs more memory than all the activations.
Instead, each call walks the output rows in bands: im2col of one band into a small slice of the
workspace (about `BAND_BYTES`, so it is still in the cache when the GEMM reads it), one GEMM,
bias + ReLU on the band while it is hot. The backward pass rebuilds the band's columns from the
layer's input (which the network keeps anyway: it is the previous layer's output), so nothing
column-sized outlives a call. Per band, dw += dz @ cols^T, and dx gets the adjoint of im2col
(col2im) of w^T @ dz. Bands are made of full input-width rows (see im2col_band), so every copy
is one contiguous slice per (channel, tap).

Threads (kernels/threads.py): the bands of a call are split into one contiguous run per thread,
each with its own slice of the workspace and its own partial dw and db, summed in thread order
after the join. Only the first band of a run can share input rows with another thread's band in
dx (the 2 rows that two neighbouring bands both touch): that band adds into a private halo,
added after the join.
"""
import numpy as np
from numba import njit

from ..backend import scratch
from . import threads

BAND_BYTES = 1 << 20        # columns of one band: ~1 MiB, fits the per-core L2 cache
MIN_BAND_COLS = 2048        # but at least this many GEMM columns (deep layers: few, wide rows)
MAX_BAND_BYTES = 8 << 20    # and never more than 8 MiB of columns (the workspace's size)


def forward(x, w, b, workspace=None, keep=True):
    """y = relu(conv3x3(x, w) + b) for x (N, C, H, W) -> (y (N, F, H-2, W-2), cache).

    cache = (x, w, y), or None when keep=False. `workspace`: a backend.Workspace for the bands'
    columns (a fresh array without one)."""
    n, c, h, wd = x.shape
    f = w.shape[0]
    x = np.ascontiguousarray(x)
    w2 = w.reshape(f, c * 9)
    y = np.empty((n, f, h - 2, wd - 2), x.dtype)
    rows = band_rows(c, wd, x.itemsize, h - 2, threads.THREADS)
    bands = _bands(n, h - 2, rows)
    size = c * 9 * rows * wd                          # one thread's columns; then its GEMM output
    per = size + f * rows * wd
    buf = scratch(workspace, per * min(threads.THREADS, len(bands)), x.dtype)

    def work(t, run):
        mine = buf[t * per:(t + 1) * per]
        for i, r0, r1 in run:
            m = (r1 - r0) * wd
            cols = mine[:c * 9 * m].reshape(c * 9, m)
            yb = mine[size:size + f * m].reshape(f, m)
            im2col_band(x[i], r0, r1, cols)
            np.matmul(w2, cols, out=yb)                     # (F, band), still in the cache
            bias_relu_band(yb, b, r0, r1, y[i])

    threads.parallel_runs(work, bands)
    return y, ((x, w, y) if keep else None)


def backward(dy, cache, workspace=None, input_grad=True):
    """dy = dL/dy -> (dx (N, C, H, W) or None, dw (F, C, 3, 3), db (F,)).

    cache = (x, w, y) from forward (y gives the ReLU's mask); the columns of x are rebuilt band
    by band. input_grad=False skips dx (the network's input layer). dy is not changed.

    dx: dcols = w^T @ dz (C*9 rows per band), folded back into dx by col2im; a thread's first
    band adds into a halo, as two bands share 2 rows of dx.
    """
    x, w, y = cache
    n, c, h, wd = x.shape
    f = w.shape[0]
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    w2t = w.reshape(f, c * 9).T
    dx = np.zeros(x.shape, x.dtype) if input_grad else None
    rows = band_rows(c, wd, x.itemsize, h - 2, threads.THREADS)
    bands = _bands(n, h - 2, rows)
    size = c * 9 * rows * wd
    per = 2 * size + f * rows * wd                    # a thread's columns, dcols and dz
    buf = scratch(workspace, per * min(threads.THREADS, len(bands)), x.dtype)

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
            # band as the inner dimension of a tall result, OpenBLAS runs it faster.
            np.matmul(cols, dz.T, out=dwt_band)
            dwt += dwt_band
            if input_grad:
                dcols = mine[size:size + c * 9 * m].reshape(c * 9, m)
                np.matmul(w2t, dz, out=dcols)                     # (C*9, band)
                if t > 0 and halo is None and r0 > 0:             # rows r0, r0+1 are shared
                    halo = (i, r0, np.zeros((c, r1 - r0 + 2, wd), x.dtype))
                    col2im_band_add(dcols, 0, r1 - r0, halo[2])
                else:
                    col2im_band_add(dcols, r0, r1, dx[i])
            halo = halo or ()                         # only a run's first band may need one
        return dwt, db, halo

    parts = threads.parallel_runs(work, bands)
    dwt, db = parts[0][0], parts[0][1]
    for part_dwt, part_db, halo in parts[1:]:         # a fixed order: reproducible sums
        dwt += part_dwt
        db += part_db
        if halo:
            i, r0, rows_ = halo
            dx[i, :, r0:r0 + rows_.shape[1]] += rows_
    return dx, np.ascontiguousarray(dwt.T).reshape(w.shape), db


def _bands(n, ho, rows):
    """(image, first row, end row) of every band of `rows` output rows."""
    return [(i, r0, min(r0 + rows, ho)) for i in range(n) for r0 in range(0, ho, rows)]


def band_rows(c, w, itemsize, ho, n_threads=1):
    """Output rows per band: columns of about BAND_BYTES, but >= MIN_BAND_COLS GEMM columns
    (a GEMM of few columns re-reads the whole weight matrix for little work), at most
    MAX_BAND_BYTES of columns (the deep layers' 9C rows are long: the workspace would grow to
    hundreds of MiB for the paper's network), and at least one band per thread."""
    row = 9 * c * w * itemsize                        # bytes of columns per output row
    rows = max(BAND_BYTES // row, -(-MIN_BAND_COLS // w))
    rows = min(rows, MAX_BAND_BYTES // row, -(-ho // n_threads))
    return max(1, rows)


@njit(nogil=True, cache=True)
def im2col_band(x, r0, r1, cols):
    """x (C, H, W) -> cols (C*9, (r1-r0)*W): the columns of output rows r0..r1-1, in full rows.

    cols[c*9 + a*3 + d, (i - r0)*W + j] = x[c, i + a, j + d] for j < W' = W - 2: as in
    tinyunet.ops.conv3x3.im2col, except that each row of the band is W wide, not W'. Then the 9C
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

    y > 0 exactly where the pre-activation was > 0: ReLU's gradient at 0 is 0, as in
    tinyunet.ops.relu.
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
