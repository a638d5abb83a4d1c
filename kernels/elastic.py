"""Elastic deformation of training tiles (paper sec. 3.1), as Numba kernels.

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


@njit(cache=True)
def _sample(src, y, x, order):
    """src interpolated at (y, x): order 0, 1 or 3 (for 3, src holds spline coefficients)."""
    h, w = src.shape
    if order == 0:
        # round half away from zero, as scipy.ndimage does for order 0
        iy = int(y + 0.5) if y >= 0 else -int(-y + 0.5)
        ix = int(x + 0.5) if x >= 0 else -int(-x + 0.5)
        return src[_mirror(iy, h), _mirror(ix, w)]
    fy, fx = np.floor(y), np.floor(x)
    ty, tx = y - fy, x - fx
    iy, ix = int(fy), int(fx)
    if order == 1:
        y0, y1 = _mirror(iy, h), _mirror(iy + 1, h)
        x0, x1 = _mirror(ix, w), _mirror(ix + 1, w)
        return ((1 - ty) * ((1 - tx) * src[y0, x0] + tx * src[y0, x1])
                + ty * ((1 - tx) * src[y1, x0] + tx * src[y1, x1]))
    wy = _bspline3_weights(ty)
    wx = _bspline3_weights(tx)
    acc = 0.0
    if 1 <= iy < h - 2 and 1 <= ix < w - 2:           # interior: no mirroring needed
        for a in range(4):
            r = 0.0
            for d in range(4):
                r += wx[d] * src[iy - 1 + a, ix - 1 + d]
            acc += wy[a] * r
        return acc
    for a in range(4):
        row = _mirror(iy - 1 + a, h)
        r = 0.0
        for d in range(4):
            r += wx[d] * src[row, _mirror(ix - 1 + d, w)]
        acc += wy[a] * r
    return acc


@njit(parallel=True, cache=True)
def _deform_kernel(src, field_y, field_x, oy, ox, order, out):
    """out[i, j] = src at (oy + i + field_y[i, j], ox + j + field_x[i, j]); one pixel per step."""
    h, w = out.shape
    for i in prange(h):
        for j in range(w):
            out[i, j] = _sample(src, oy + i + field_y[i, j], ox + j + field_x[i, j], order)


@njit(cache=True)
def _spline_matrix(n_out, n_coef):
    """(n_out, n_coef) matrix M with (M @ c)[i] = cubic spline of coefficients c at position
    i (n_coef - 1) / (n_out - 1): the grid's ends on the first and last pixel, mirror border."""
    m = np.zeros((n_out, n_coef))
    step = (n_coef - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        t = i * step
        f = np.floor(t)
        wts = _bspline3_weights(t - f)
        for a in range(4):
            m[i, _mirror(int(f) - 1 + a, n_coef)] += wts[a]
    return m


@njit(cache=True)
def _prefilter_line(s, c):
    """Cubic B-spline coefficients of the samples s (1-D), mirror border, written into c.

    The interpolation condition sum_k c[k] beta3(i - k) = s[i] is the filter (z + 4 + 1/z) / 6;
    its inverse is a causal and an anticausal first-order recursion with pole Z3 (Unser 1999),
    started from the mirror-symmetric extension of s.
    """
    n = s.shape[0]
    z = Z3
    if n == 1:
        c[0] = s[0]
        return
    # causal init: sum over one period of the mirrored signal (truncated where z**k vanishes)
    if n <= _HORIZON:
        zn = z ** (n - 1)
        acc = s[0] + zn * s[n - 1]
        zk, z2 = z, zn * zn / z
        for k in range(1, n - 1):
            acc += (zk + z2) * s[k]
            zk *= z
            z2 /= z
        c[0] = acc / (1.0 - zn * zn)
    else:
        acc, zk = s[0], z
        for k in range(1, _HORIZON):
            acc += zk * s[k]
            zk *= z
        c[0] = acc
    for k in range(1, n):
        c[k] = s[k] + z * c[k - 1]
    c[n - 1] = (z / (z * z - 1.0)) * (c[n - 1] + z * c[n - 2])
    for k in range(n - 2, -1, -1):
        c[k] = z * (c[k + 1] - c[k])
    for k in range(n):
        c[k] *= 6.0                                   # gain (1 - z)(1 - 1/z)


@njit(parallel=True, cache=True)
def spline_filter(image):
    """2-D cubic B-spline prefilter, mirror border (= scipy.ndimage.spline_filter(order=3,
    mode="mirror")), rows then columns, lines in parallel. Returns float64 coefficients."""
    h, w = image.shape
    src = image.astype(np.float64)
    tmp = np.empty((h, w))
    out = np.empty((h, w))
    for i in prange(h):                               # rows, each line in place in tmp
        _prefilter_line(src[i], tmp[i])
    for j in prange(w):                               # columns (strided views)
        _prefilter_line(tmp[:, j], out[:, j])
    return out


def random_displacement(grid=3, sigma=10.0, rng=None):
    """The coarse field: (2, grid, grid) row and column displacements in pixels, N(0, sigma^2).

    paper sec. 3.1: a 3x3 grid, 10 px standard deviation. `rng`: a Generator or a seed.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2 (points on the corners), got {grid}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return rng.normal(0.0, sigma, size=(2, grid, grid))


def dense_displacement(displacement, shape):
    """The per-pixel field (2, H, W) of a coarse field on an H x W window (bicubic B-spline)."""
    displacement = np.asarray(displacement, dtype=np.float64)
    if displacement.ndim != 3 or displacement.shape[0] != 2 or min(displacement.shape[1:]) < 2:
        raise ValueError(f"displacement must have shape (2, g, g) with g >= 2, got "
                         f"{displacement.shape}")
    h, w = shape
    g0, g1 = displacement.shape[1:]
    # The bicubic spline is separable: field = My @ coef @ Mx^T, two tiny matrix products.
    # (mx.T made contiguous: NumPy's matmul with a transposed K=3 operand is 100x slower)
    my, mxt = _spline_matrix(h, g0), np.ascontiguousarray(_spline_matrix(w, g1).T)
    out = np.empty((2, h, w))
    for c in range(2):
        np.matmul(my @ spline_filter(displacement[c]), mxt, out=out[c])
    return out


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
    field = dense_displacement(displacement, out_shape)
    outs = []
    for a, o in zip(arrays, orders):
        if o == 0:
            src = a                                        # nearest: copy values exactly
        elif o == 1:
            src = a.astype(np.float64)
        else:
            src = spline_filter(a)
        out = np.empty(out_shape, dtype=src.dtype)
        _deform_kernel(src, field[0], field[1], float(offset[0]), float(offset[1]), o, out)
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
