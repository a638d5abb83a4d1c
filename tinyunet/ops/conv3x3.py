"""3x3 convolution, valid padding, stride 1, through im2col and one GEMM (paper sec. 2).

Shapes:  x (N, C, H, W),  w (F, C, 3, 3) (PyTorch's layout),  b (F,)  ->  y (N, F, H', W')
with H' = H - 2 and W' = W - 2 (valid: no padding, so every output pixel sees real input).

    y[n, f, i, j] = b[f] + sum_{c, a, d} w[f, c, a, d] * x[n, c, i + a, j + d]

im2col lays the 9 shifted copies of x side by side, cols[n, c, a, d, i, j] = x[n, c, i + a, j + d],
so the sum over (c, a, d) becomes one matrix product with w reshaped to (F, C*9).
"""
from ..backend import get_array_module, scratch


def cols_size(shape):
    """Elements of the im2col columns of an input of `shape` (N, C, H, W): N*C*9*H'*W'."""
    n, c, h, w = shape
    return n * c * 9 * (h - 2) * (w - 2)


def im2col(x, workspace=None):
    """(N, C, H, W) -> cols (N, C*9, H'*W') with cols[n, c*9 + a*3 + d, i*W' + j] = x[n, c, i+a, j+d].

    Nine strided block copies (one per kernel offset (a, d)); each copies whole rows, which is why
    this is fast in NumPy and CuPy alike. The columns go into the `workspace`
    (backend.Workspace) if one is given: reusing it across steps spares the page faults of a
    fresh 100 MB+ allocation.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho, wo = h - 2, w - 2
    shape = (n, c, 3, 3, ho, wo)
    cols = scratch(workspace, cols_size(x.shape), x.dtype, xp).reshape(shape)
    for a in range(3):
        for d in range(3):
            cols[:, :, a, d] = x[:, :, a:a + ho, d:d + wo]
    return cols.reshape(n, c * 9, ho * wo)


def col2im(dcols, shape):
    """Adjoint of im2col: (N, C*9, H'*W') -> (N, C, H, W), summing the 9 overlapping copies."""
    xp = get_array_module(dcols)
    n, c, h, w = shape
    ho, wo = h - 2, w - 2
    dcols = dcols.reshape(n, c, 3, 3, ho, wo)
    dx = xp.zeros(shape, dtype=dcols.dtype)
    for a in range(3):
        for d in range(3):
            dx[:, :, a:a + ho, d:d + wo] += dcols[:, :, a, d]
    return dx


def forward(x, w, b, workspace=None, keep=True):
    """y = conv3x3(x, w) + b. Returns (y, cache); cache = (x, w), or None when keep=False.

    What the backward pass needs is the columns of x (for dw) and w (for dx). The columns are 9x
    the size of x, and x is kept by the network anyway (it is the previous layer's output), so the
    cache holds x and the backward pass builds the columns again: one more im2col per layer (a copy,
    about a tenth of the layer's time) buys back 9x the input's memory in every layer
    (docs/01-convolution.md measures both). `workspace`: an optional backend.Workspace for the
    columns (see im2col); keep=False (inference) keeps nothing.
    """
    n, c, h, wd = x.shape
    f = w.shape[0]
    if x.ndim != 4 or w.shape[1:] != (c, 3, 3) or b.shape != (f,):
        raise ValueError(f"conv3x3: x {x.shape}, w {w.shape}, b {b.shape} do not fit "
                         "x (N, C, H, W), w (F, C, 3, 3), b (F,)")
    if h < 3 or wd < 3:
        raise ValueError(f"conv3x3: input {h}x{wd} is smaller than the 3x3 kernel")
    cols = im2col(x, workspace)                       # (N, C*9, H'*W')
    y = w.reshape(f, c * 9) @ cols                    # (N, F, H'*W'), batched GEMM
    y += b[:, None]
    return y.reshape(n, f, h - 2, wd - 2), ((x, w) if keep else None)


def backward(dy, cache, workspace=None):
    """dy (N, F, H', W') -> (dx (N, C, H, W), dw (F, C, 3, 3), db (F,)).

    `workspace` (optional, as in forward) holds the recomputed columns, then (once dw is made)
    the column gradient.
    """
    xp = get_array_module(dy)
    x, w = cache
    n, f = dy.shape[:2]
    dy = dy.reshape(n, f, -1)                         # (N, F, H'*W')
    w2 = w.reshape(f, -1)                             # (F, C*9)
    cols = im2col(x, workspace)                       # (N, C*9, H'*W'), rebuilt from x
    # dw[f, k] = sum_n sum_p dy[n, f, p] * cols[n, k, p]: one GEMM over the batch and pixels.
    dw = xp.tensordot(dy, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
    db = dy.sum(axis=(0, 2))
    dcols = xp.matmul(w2.T, dy, out=cols)             # (N, C*9, H'*W'), into the same buffer
    return col2im(dcols, x.shape), dw, db
