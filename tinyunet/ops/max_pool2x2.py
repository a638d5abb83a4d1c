"""2x2 max pooling with stride 2, the downsampling step of the contracting path (paper sec. 2).

Shapes: x (N, C, H, W) with H and W even -> y (N, C, H/2, W/2).

    y[n, c, i, j] = max(x[n, c, 2i + a, 2j + d] for a, d in {0, 1})

The gradient of each output goes to exactly one input: the window's maximum. On ties it goes to
the first maximum in row-major order within the window: (0, 0), then (0, 1), (1, 0), (1, 1).
"""
from ..backend import get_array_module


def _corners(x):
    """The four strided views x[:, :, a::2, d::2] in row-major window order."""
    return [x[:, :, a::2, d::2] for a in (0, 1) for d in (0, 1)]


def check_shape(x):
    """A ValueError unless x is (N, C, H, W) with H and W even."""
    if x.ndim != 4:
        raise ValueError(f"max_pool2x2: expected x of shape (N, C, H, W), got {x.shape}")
    h, w = x.shape[2:]
    if h % 2 or w % 2:
        raise ValueError(f"max_pool2x2: input size {h}x{w} must be even in both dimensions; "
                         "for a U-Net use a valid tile size (see tinyunet.valid_input_sizes)")


def forward(x):
    """Returns (y, cache); cache holds the index 0..3 of the winning corner of each window."""
    xp = get_array_module(x)
    check_shape(x)
    c = _corners(x)
    y = c[0].copy()
    idx = xp.zeros(y.shape, dtype=xp.uint8)
    for k in (1, 2, 3):
        better = c[k] > y                             # strict: ties keep the earlier corner
        y = xp.where(better, c[k], y)
        # where, not idx[better] = k: a boolean-mask assignment makes CuPy count the mask on
        # the host, a synchronisation per corner
        idx = xp.where(better, xp.uint8(k), idx)
    return y, (idx, x.shape)


def backward(dy, cache):
    """dy (N, C, H/2, W/2) -> dx (N, C, H, W), dy routed to each window's winning corner."""
    idx, xshape = cache
    xp = get_array_module(dy)
    dx = xp.empty(xshape, dtype=dy.dtype)
    for k, view in enumerate(_corners(dx)):
        view[...] = dy * (idx == k)
    return dx
