"""Elastic deformation of training tiles (paper sec. 3.1), as Numba kernels
(tinyunet.kernels.elastic).

    "We generate smooth deformations using random displacement vectors on a coarse 3 by 3 grid.
     The displacements are sampled from a Gaussian distribution with 10 pixels standard deviation.
     Per-pixel displacements are then computed using bicubic interpolation."

Semantics, for an output pixel (i, j) of the window starting at `offset` (oy, ox) in the input's
coordinates, with y = oy + i and x = ox + j:

    out[i, j] = in[y + dy(i, j), x + dx(i, j)]

`dy` and `dx` come from a coarse (grid x grid) field whose points sit on the output window's
corners and are evenly spaced between them. Positions outside the input are mirrored about the
edge pixels (... in[2], in[1], in[0], in[1], in[2] ...), SciPy's mode "mirror".

Interpolation, both for the coarse field and for the image, is SciPy's `map_coordinates`
convention exactly, so a plain SciPy implementation is the test oracle:
- order 3: cubic B-spline with prefilter (the spline passes through the samples; the prefilter
  is a recursive filter, `spline_filter` here, equal to scipy.ndimage.spline_filter). Chosen over Catmull-Rom because it
  is twice continuously differentiable, so the deformation has no kinks along the grid lines,
  and because it is what the paper's own Caffe/Matlab tooling and elasticdeform use.
- order 1: bilinear (for weight maps); order 0: nearest, halves rounded away from zero (for
  label images: every output value is one of the input's values).
"""
import numpy as np
from numba import njit, prange

ORDERS = (0, 1, 3)


Z3 = np.sqrt(3.0) - 2.0          # pole of the cubic B-spline prefilter
_HORIZON = 40                    # |Z3|**40 < 1e-22: terms beyond it vanish in float64


@njit(cache=True, inline="always")
def _mirror(k, n):
    """Index k folded into [0, n) by mirroring about the edge pixels (period 2n - 2)."""
    if 0 <= k < n:
        return k
    if n == 1:
        return 0
    period = 2 * n - 2
    k = abs(k) % period
    return period - k if k >= n else k


@njit(cache=True, inline="always")
def _bspline3_weights(t):
    """Cubic B-spline weights of the taps floor-1 .. floor+2 for fractional part t in [0, 1)."""
    s = 1.0 - t
    return (s * s * s / 6.0,
            (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
            (4.0 - 6.0 * s * s + 3.0 * s * s * s) / 6.0,
            t * t * t / 6.0)


@njit(cache=True, inline="always")
def _round_half_away(v):
    """Nearest integer, halves away from zero (scipy.ndimage's rounding for order 0)."""
    return int(v + 0.5) if v >= 0 else -int(-v + 0.5)


@njit(cache=True, inline="always")
def _fold(v, n):
    """Position v mirrored into [0, n - 1] (period 2n - 2). The spline of mirrored coefficients is
    symmetric about 0 and n - 1, so it has the same value at v and at _fold(v, n)."""
    if n == 1:
        return 0.0
    period = 2.0 * (n - 1)
    v = v - period * np.floor(v / period)
    return min(v, period - v)


@njit(cache=True, inline="always")
def _source_position(rows_y, rows_x, tap_idx, tap_wt, oy, ox, i, j):
    """(y, x) = (oy + i + dy(i, j), ox + j + dx(i, j)), the field evaluated from its separable
    factors (see field_factors): dy(i, j) = sum_t rows_y[i, tap_idx[t, j]] * tap_wt[t, j]."""
    # 2-D indexing throughout: a row view (rows_y[i]) would cost a reference count per pixel
    k0, k1, k2, k3 = tap_idx[0, j], tap_idx[1, j], tap_idx[2, j], tap_idx[3, j]
    w0, w1, w2, w3 = tap_wt[0, j], tap_wt[1, j], tap_wt[2, j], tap_wt[3, j]
    dy = rows_y[i, k0] * w0 + rows_y[i, k1] * w1 + rows_y[i, k2] * w2 + rows_y[i, k3] * w3
    dx = rows_x[i, k0] * w0 + rows_x[i, k1] * w1 + rows_x[i, k2] * w2 + rows_x[i, k3] * w3
    return oy + i + dy, ox + j + dx


# fastmath: lets LLVM contract and reorder the tap sums (FMA); results move by ~1 ulp.
@njit(parallel=True, cache=True, fastmath=True)
def _warp_nearest(src, rows_y, rows_x, tap_idx, tap_wt, oy, ox, out):
    """order 0: out[i, j] = src[round(y), round(x)] (mirrored)."""
    h, w = src.shape
    for i in prange(out.shape[0]):
        for j in range(out.shape[1]):
            y, x = _source_position(rows_y, rows_x, tap_idx, tap_wt, oy, ox, i, j)
            out[i, j] = src[_mirror(_round_half_away(y), h), _mirror(_round_half_away(x), w)]


@njit(parallel=True, cache=True, fastmath=True)
def _warp_linear(src, rows_y, rows_x, tap_idx, tap_wt, oy, ox, out):
    """order 1: bilinear interpolation of src at (y, x) (mirrored)."""
    h, w = src.shape
    for i in prange(out.shape[0]):
        for j in range(out.shape[1]):
            y, x = _source_position(rows_y, rows_x, tap_idx, tap_wt, oy, ox, i, j)
            fy, fx = np.floor(y), np.floor(x)
            ty, tx = y - fy, x - fx
            y0, x0 = _mirror(int(fy), h), _mirror(int(fx), w)
            y1, x1 = _mirror(int(fy) + 1, h), _mirror(int(fx) + 1, w)
            out[i, j] = ((1 - ty) * ((1 - tx) * src[y0, x0] + tx * src[y0, x1])
                         + ty * ((1 - tx) * src[y1, x0] + tx * src[y1, x1]))


@njit(parallel=True, cache=True, fastmath=True)
def _warp_cubic(coef, rows_y, rows_x, tap_idx, tap_wt, oy, ox, out):
    """order 3: the cubic spline at (y, x). `coef` holds the image's spline coefficients inside a
    2-pixel mirrored frame (spline_filter(image, frame=2)): after folding (y, x) into the image,
    all 16 taps fall inside the frame, so the loop has no per-tap mirroring and no branches."""
    h, w = coef.shape[0] - 4, coef.shape[1] - 4
    for i in prange(out.shape[0]):
        for j in range(out.shape[1]):
            y, x = _source_position(rows_y, rows_x, tap_idx, tap_wt, oy, ox, i, j)
            y, x = _fold(y, h), _fold(x, w)
            fy, fx = np.floor(y), np.floor(x)
            wy0, wy1, wy2, wy3 = _bspline3_weights(y - fy)
            wx0, wx1, wx2, wx3 = _bspline3_weights(x - fx)
            r, c = int(fy) + 1, int(fx) + 1           # tap -1 in framed coordinates
            out[i, j] = (
                wy0 * (wx0 * coef[r, c] + wx1 * coef[r, c + 1]
                       + wx2 * coef[r, c + 2] + wx3 * coef[r, c + 3])
                + wy1 * (wx0 * coef[r + 1, c] + wx1 * coef[r + 1, c + 1]
                         + wx2 * coef[r + 1, c + 2] + wx3 * coef[r + 1, c + 3])
                + wy2 * (wx0 * coef[r + 2, c] + wx1 * coef[r + 2, c + 1]
                         + wx2 * coef[r + 2, c + 2] + wx3 * coef[r + 2, c + 3])
                + wy3 * (wx0 * coef[r + 3, c] + wx1 * coef[r + 3, c + 1]
                         + wx2 * coef[r + 3, c + 2] + wx3 * coef[r + 3, c + 3]))


@njit(cache=True)
def _spline_taps(n_out, n_coef):
    """The 4 coefficient indices (mirrored) and B-spline weights of each of n_out pixels whose
    positions i (n_coef - 1) / (n_out - 1) put the grid's ends on the first and last pixel.
    Returns (idx, wt), each (4, n_out)."""
    idx = np.zeros((4, n_out), np.int64)
    wt = np.zeros((4, n_out))
    step = (n_coef - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        t = i * step
        f = np.floor(t)
        wts = _bspline3_weights(t - f)
        for a in range(4):
            idx[a, i] = _mirror(int(f) - 1 + a, n_coef)
            wt[a, i] = wts[a]
    return idx, wt


@njit(cache=True)
def _spline_matrix(n_out, n_coef):
    """(n_out, n_coef) matrix M with (M @ c)[i] = the cubic spline of coefficients c at pixel i."""
    idx, wt = _spline_taps(n_out, n_coef)
    m = np.zeros((n_out, n_coef))
    for i in range(n_out):
        for a in range(4):
            m[i, idx[a, i]] += wt[a, i]
    return m


@njit(cache=True)
def _causal_init_weights(n):
    """Weights wk with c+[0] = sum_k wk[k] s[k]: the causal recursion's start for the mirrored
    signal (Unser 1999). Exact for n <= _HORIZON; beyond, z**k is below 1e-22 and truncated."""
    z = Z3
    m = min(n, _HORIZON)
    wk = np.empty(m)
    if n == 1:
        wk[0] = 1.0
    elif n <= _HORIZON:                # one period of the mirrored signal, summed exactly
        norm = 1.0 - z ** (2 * n - 2)
        wk[0] = 1.0 / norm
        for k in range(1, n - 1):
            wk[k] = (z ** k + z ** (2 * n - 2 - k)) / norm
        wk[n - 1] = z ** (n - 1) / norm
    else:
        for k in range(m):
            wk[k] = z ** k
    return wk


@njit(cache=True)
def _prefilter_line(s, c, wk):
    """Cubic B-spline coefficients of the samples s (1-D), mirror border, written into c
    (c may be s itself: each s[k] is read before c[k] is written).

    The interpolation condition sum_k c[k] beta3(i - k) = s[i] is the filter (z + 4 + 1/z) / 6;
    its inverse is a causal and an anticausal first-order recursion with pole Z3 (Unser 1999),
    started from the mirror-symmetric extension of s.
    """
    n = s.shape[0]
    z = Z3
    if n == 1:
        c[0] = s[0]
        return
    acc = 0.0
    for k in range(wk.shape[0]):
        acc += wk[k] * s[k]
    c[0] = acc
    for k in range(1, n):
        c[k] = s[k] + z * c[k - 1]
    c[n - 1] = (z / (z * z - 1.0)) * (c[n - 1] + z * c[n - 2])
    for k in range(n - 2, -1, -1):
        c[k] = z * (c[k + 1] - c[k])
    for k in range(n):
        c[k] *= 6.0                                   # gain (1 - z)(1 - 1/z)


@njit(cache=True)
def _prefilter_columns(a, j0, j1, wk, start):
    """The same recursion down the columns j0..j1 of `a`, in place, all columns of the block at
    once (the inner loop runs along a row: contiguous, vectorised). `start`: scratch row."""
    n = a.shape[0]
    z = Z3
    if n == 1:
        return
    for j in range(j0, j1):
        start[j - j0] = 0.0
    for k in range(wk.shape[0]):
        for j in range(j0, j1):
            start[j - j0] += wk[k] * a[k, j]
    for j in range(j0, j1):
        a[0, j] = start[j - j0]
    for i in range(1, n):
        for j in range(j0, j1):
            a[i, j] += z * a[i - 1, j]
    g = z / (z * z - 1.0)
    for j in range(j0, j1):
        a[n - 1, j] = g * (a[n - 1, j] + z * a[n - 2, j])
    for i in range(n - 2, -1, -1):
        for j in range(j0, j1):
            a[i, j] = z * (a[i + 1, j] - a[i, j])
    for i in range(n):
        for j in range(j0, j1):
            a[i, j] *= 6.0


_BLOCK = 64                      # columns per parallel block of the column pass


@njit(parallel=True, cache=True)
def spline_filter(image, frame=0):
    """2-D cubic B-spline prefilter, mirror border (= scipy.ndimage.spline_filter(order=3,
    mode="mirror")): rows in parallel, then columns in parallel blocks. Returns float64
    coefficients inside a mirrored frame of `frame` pixels on each side
    (out[frame:-frame, frame:-frame] is the filter itself)."""
    h, w = image.shape
    out = np.empty((h + 2 * frame, w + 2 * frame))
    inner = out[frame:frame + h, frame:frame + w]
    wk_rows, wk_cols = _causal_init_weights(w), _causal_init_weights(h)
    for i in prange(h):                               # rows
        _prefilter_line(image[i], inner[i], wk_rows)
    n_blocks = (w + _BLOCK - 1) // _BLOCK
    scratch = np.empty((n_blocks, _BLOCK))
    for b in prange(n_blocks):                        # columns, in place
        _prefilter_columns(inner, b * _BLOCK, min(w, (b + 1) * _BLOCK), wk_cols, scratch[b])
    for i in range(frame, frame + h):                 # the frame: mirrored coefficients,
        for k in range(frame):                        # left and right of each row ...
            out[i, k] = inner[i - frame, _mirror(k - frame, w)]
            out[i, frame + w + k] = inner[i - frame, _mirror(w + k, w)]
    for k in range(frame):                            # ... then whole rows above and below
        out[k] = out[frame + _mirror(k - frame, h)]
        out[frame + h + k] = out[frame + _mirror(h + k, h)]
    return out


def random_displacement(grid=3, sigma=10.0, rng=None):
    """The coarse field: (2, grid, grid) row and column displacements in pixels, N(0, sigma^2).

    paper sec. 3.1: a 3x3 grid, 10 px standard deviation. `rng`: a Generator or a seed.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2 (points on the corners), got {grid}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return rng.normal(0.0, sigma, size=(2, grid, grid))


@njit(cache=True)
def _spline_filter_small(a):
    """spline_filter for the coarse grid, serially (a parallel launch costs more than the work)."""
    h, w = a.shape
    out = np.empty((h, w))
    wk_rows, wk_cols = _causal_init_weights(w), _causal_init_weights(h)
    for i in range(h):
        _prefilter_line(a[i], out[i], wk_rows)
    for j in range(w):
        _prefilter_line(out[:, j], out[:, j], wk_cols)
    return out


def _check_displacement(displacement):
    displacement = np.asarray(displacement, dtype=np.float64)
    if displacement.ndim != 3 or displacement.shape[0] != 2 or min(displacement.shape[1:]) < 2:
        raise ValueError(f"displacement must have shape (2, g, g) with g >= 2, got "
                         f"{displacement.shape}")
    return displacement


def field_factors(displacement, shape):
    """The bicubic field is separable: dy = My @ Cy @ Mx^T with Cy the spline coefficients of
    the coarse grid and My, Mx the (pixels x grid) spline matrices, Mx having 4 non-zeros a row.
    Returns (My @ Cy, My @ Cx, idx, wt): two (H, g) arrays and Mx's 4 taps per column (4, W), so a
    kernel evaluates the field at a pixel in 8 multiply-adds instead of reading a dense array."""
    displacement = _check_displacement(displacement)
    (h, w), (g0, g1) = shape, displacement.shape[1:]
    my = _spline_matrix(h, g0)
    rows_y, rows_x = (np.ascontiguousarray(my @ _spline_filter_small(displacement[c]))
                      for c in range(2))
    return (rows_y, rows_x) + _spline_taps(w, g1)


def dense_displacement(displacement, shape):
    """The per-pixel field (2, H, W) of a coarse field spanning an H x W window (for plots and
    tests; the kernels evaluate it on the fly from field_factors)."""
    displacement = _check_displacement(displacement)
    h, w = shape
    my, mx = _spline_matrix(h, displacement.shape[1]), _spline_matrix(w, displacement.shape[2])
    return np.stack([my @ _spline_filter_small(displacement[c]) @ mx.T for c in range(2)])


def _as_list(arrays):
    single = isinstance(arrays, np.ndarray)
    arrays = [arrays] if single else list(arrays)
    for a in arrays:
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"deform_grid works on 2-D arrays (H, W), got shape {a.shape}")
    return single, [np.asarray(a) for a in arrays]


def deform_grid(arrays, displacement, order=3, mode="mirror", out_shape=None, offset=(0, 0)):
    """Apply one coarse displacement to each of `arrays` (2-D, same shape) so they stay aligned.

    order: an int for all arrays or one per array (3 cubic, 1 linear, 0 nearest).
    out_shape, offset: compute only the window of out_shape pixels whose top-left pixel is at
    `offset` in the input's coordinates (it may reach outside the input: mirrored). Defaults: the
    whole input. The coarse grid spans this output window.
    Returns one array (if one was given) or a list, each of the input's dtype.
    """
    if mode != "mirror":
        raise ValueError(f"mode {mode!r} is not supported: valid modes are ('mirror',)")
    single, arrays = _as_list(arrays)
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"all arrays must have one shape, got {[a.shape for a in arrays]}")
    orders = [order] * len(arrays) if np.isscalar(order) else list(order)
    if len(orders) != len(arrays) or any(o not in ORDERS for o in orders):
        raise ValueError(f"order must be one of {ORDERS} or a list of them, one per array; "
                         f"got {order!r} for {len(arrays)} arrays")
    out_shape = tuple(out_shape) if out_shape is not None else arrays[0].shape
    field = field_factors(displacement, out_shape)
    oy, ox = float(offset[0]), float(offset[1])
    outs = []
    for a, o in zip(arrays, orders):
        floating = np.issubdtype(a.dtype, np.floating)
        # integer images interpolated linearly or cubically: compute in float64, round at the end
        out = np.empty(out_shape, dtype=a.dtype if (o == 0 or floating) else np.float64)
        if o == 0:
            _warp_nearest(a, *field, oy, ox, out)      # values copied exactly
        elif o == 1:
            _warp_linear(a, *field, oy, ox, out)
        else:
            _warp_cubic(spline_filter(a, 2), *field, oy, ox, out)
        outs.append(out if out.dtype == a.dtype else _cast(out, a.dtype))
    return outs[0] if single else outs


def _cast(x, dtype):
    """Back to the input dtype; integer images are rounded and clipped to their range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def elastic_deform(arrays, sigma=10.0, grid=3, order=3, mode="mirror", rng=None,
                   out_shape=None, offset=(0, 0)):
    """random_displacement + deform_grid: one random elastic deformation of aligned arrays."""
    disp = random_displacement(grid, sigma, rng)
    return deform_grid(arrays, disp, order=order, mode=mode, out_shape=out_shape, offset=offset)
