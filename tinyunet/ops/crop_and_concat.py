"""Centre crop of the skip feature map and channel concatenation (paper sec. 2, fig. 1).

The contracting path's map is larger than the upsampled one, because every valid convolution
loses a border; it is cropped to the centre and put first, the upsampled map second:

Shapes: skip (N, C1, Hs, Ws), up (N, C2, H, W), Hs >= H, Ws >= W -> y (N, C1 + C2, H, W)
        top = (Hs - H) / 2, left = (Ws - W) / 2

Hs - H and Ws - W must be even: only then is there a centre crop. In a U-Net of valid tile size
they always are (8, 32, 80, 176 px from the lowest level up); an odd difference means the sizes
went wrong upstream, and cropping anyway would misalign the two maps by half a pixel, so it is
an error.
"""
from ..backend import get_array_module


def crop_offsets(skip_hw, up_hw):
    """(top, left) of the centre crop of a skip map of size skip_hw to size up_hw."""
    (hs, ws), (h, w) = skip_hw, up_hw
    if hs < h or ws < w:
        raise ValueError(f"crop_and_concat: skip map {hs}x{ws} is smaller than the upsampled "
                         f"map {h}x{w}")
    if (hs - h) % 2 or (ws - w) % 2:
        raise ValueError(f"crop_and_concat: skip map {hs}x{ws} and upsampled map {h}x{w} differ "
                         f"by {hs - h}x{ws - w} px; a centre crop needs an even difference (in a "
                         f"U-Net, use a valid tile size: tinyunet.valid_input_sizes)")
    return (hs - h) // 2, (ws - w) // 2


def check_batch(skip, up):
    """A ValueError unless the two maps have the same batch size."""
    if skip.shape[0] != up.shape[0]:
        raise ValueError(f"crop_and_concat: batch sizes differ ({skip.shape} vs {up.shape})")


def forward(skip, up):
    """Returns (y, cache)."""
    xp = get_array_module(up)
    check_batch(skip, up)
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
