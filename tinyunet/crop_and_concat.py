"""Centre crop of the skip feature map and channel concatenation (paper sec. 2, fig. 1).

The contracting path's map is larger than the upsampled one, because every valid convolution
loses a border; it is cropped to the centre and put first, the upsampled map second:

Shapes: skip (N, C1, Hs, Ws), up (N, C2, H, W), Hs >= H, Ws >= W -> y (N, C1 + C2, H, W)
        top = (Hs - H) // 2, left = (Ws - W) // 2   (the difference is even in a valid U-Net;
        were it odd, the extra row/column would be dropped at the bottom/right).
"""
from .backend import get_array_module


def crop_offsets(skip_hw, up_hw):
    """(top, left) of the centre crop of a skip map of size skip_hw to size up_hw."""
    (hs, ws), (h, w) = skip_hw, up_hw
    if hs < h or ws < w:
        raise ValueError(f"crop_and_concat: skip map {hs}x{ws} is smaller than the upsampled "
                         f"map {h}x{w}")
    return (hs - h) // 2, (ws - w) // 2


def forward(skip, up):
    """Returns (y, cache)."""
    xp = get_array_module(up)
    if skip.shape[0] != up.shape[0]:
        raise ValueError(f"crop_and_concat: batch sizes differ ({skip.shape} vs {up.shape})")
    h, w = up.shape[2:]
    top, left = crop_offsets(skip.shape[2:], (h, w))
    cropped = skip[:, :, top:top + h, left:left + w]
    y = xp.concatenate([cropped, up], axis=1)         # skip first, then the upsampled map
    return y, (skip.shape, top, left)


def backward(dy, cache):
    """dy (N, C1 + C2, H, W) -> (dskip (N, C1, Hs, Ws), zero outside the crop; dup (N, C2, H, W))."""
    xp = get_array_module(dy)
    skip_shape, top, left = cache
    c1 = skip_shape[1]
    h, w = dy.shape[2:]
    dskip = xp.zeros(skip_shape, dtype=dy.dtype)
    dskip[:, :, top:top + h, left:left + w] = dy[:, :c1]
    return dskip, dy[:, c1:]
