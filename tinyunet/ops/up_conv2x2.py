"""2x2 up-convolution (transposed convolution, stride 2) that halves the channels (paper sec. 2).

Shapes: x (N, C, H, W), w (C, F, 2, 2) (PyTorch's ConvTranspose2d layout), b (F,)
        -> y (N, F, 2H, 2W), usually with F = C/2.

    y[n, f, 2i + a, 2j + d] = b[f] + sum_c x[n, c, i, j] * w[c, f, a, d]

Each input pixel paints its own 2x2 output block: the blocks never overlap, so the op is one GEMM
(w^T as (F*4, C) times x as (C, H*W)) followed by a reshuffle of the (a, d) axes into place.
"""
from ..backend import get_array_module


def check_shapes(x, w, b):
    """A ValueError unless x (N, C, H, W), w (C, F, 2, 2) and b (F,) fit together."""
    c, f = x.shape[1], w.shape[1]
    if w.shape != (c, f, 2, 2) or b.shape != (f,):
        raise ValueError(f"up_conv2x2: x {x.shape}, w {w.shape}, b {b.shape} do not fit "
                         "x (N, C, H, W), w (C, F, 2, 2), b (F,)")


def forward(x, w, b):
    """Returns (y, cache)."""
    xp = get_array_module(x)
    check_shapes(x, w, b)
    n, c, h, wd = x.shape
    f = w.shape[1]
    x2 = x.reshape(n, c, h * wd)                      # (N, C, H*W)
    z = w.reshape(c, f * 4).T @ x2                    # (N, F*4, H*W), rows ordered (f, a, d)
    z = z.reshape(n, f, 2, 2, h, wd)
    y = xp.ascontiguousarray(z.transpose(0, 1, 4, 2, 5, 3))   # (N, F, H, 2, W, 2)
    y = y.reshape(n, f, 2 * h, 2 * wd)
    y += b[:, None, None]
    return y, (x2, w, x.shape)


def backward(dy, cache):
    """dy (N, F, 2H, 2W) -> (dx (N, C, H, W), dw (C, F, 2, 2), db (F,))."""
    xp = get_array_module(dy)
    x2, w, xshape = cache
    n, c, h, wd = xshape
    f = w.shape[1]
    # Undo the forward reshuffle: (N, F, H, 2, W, 2) -> (N, F*4, H*W).
    dz = dy.reshape(n, f, h, 2, wd, 2).transpose(0, 1, 3, 5, 2, 4)
    dz = xp.ascontiguousarray(dz).reshape(n, f * 4, h * wd)
    w2 = w.reshape(c, f * 4)
    dx = (w2 @ dz).reshape(xshape)                    # (N, C, H, W)
    dw = xp.tensordot(x2, dz, axes=([0, 2], [0, 2])).reshape(w.shape)   # one GEMM, whole batch
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db
