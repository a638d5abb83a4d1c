"""1x1 convolution: the final layer that maps feature channels to K class scores (paper sec. 2).

Shapes:  x (N, C, H, W),  w (F, C, 1, 1),  b (F,)  ->  y (N, F, H, W)

    y[n, f, i, j] = b[f] + sum_c w[f, c] * x[n, c, i, j]

With x viewed as (N, C, H*W) this is one matrix product per image; no im2col is needed.
"""
from ..backend import get_array_module


def forward(x, w, b):
    """Returns (y, cache)."""
    n, c, h, wd = x.shape
    f = w.shape[0]
    if w.shape != (f, c, 1, 1) or b.shape != (f,):
        raise ValueError(f"conv1x1: x {x.shape}, w {w.shape}, b {b.shape} do not fit "
                         "x (N, C, H, W), w (F, C, 1, 1), b (F,)")
    x2 = x.reshape(n, c, h * wd)                      # (N, C, H*W)
    y = w.reshape(f, c) @ x2 + b[:, None]             # (N, F, H*W)
    return y.reshape(n, f, h, wd), (x2, w, x.shape)


def backward(dy, cache):
    """dy (N, F, H, W) -> (dx (N, C, H, W), dw (F, C, 1, 1), db (F,))."""
    xp = get_array_module(dy)
    x2, w, xshape = cache
    n, f = dy.shape[:2]
    dy = dy.reshape(n, f, -1)                         # (N, F, H*W)
    w2 = w.reshape(f, -1)
    # dw[f, c] = sum over the batch and pixels of dy[n, f, p] * x[n, c, p]: one GEMM
    dw = xp.tensordot(dy, x2, axes=([0, 2], [0, 2])).reshape(w.shape)
    db = dy.sum(axis=(0, 2))
    dx = (w2.T @ dy).reshape(xshape)
    return dx, dw, db
