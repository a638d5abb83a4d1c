"""ReLU, y = max(x, 0), applied after every 3x3 convolution (paper sec. 2).

Shapes: x (any) -> y (same). Backward: dx = dy where y > 0, else 0 (at x == 0 the gradient is 0).
"""
from ..backend import get_array_module


def forward(x, inplace=False):
    """Returns (y, cache). With inplace=True, x is overwritten (saves one activation-sized copy)."""
    xp = get_array_module(x)
    y = xp.maximum(x, 0, out=x if inplace else None)
    return y, y


def backward(dy, cache):
    """dy -> dx. `cache` is the forward output y; y > 0 exactly where x > 0."""
    y = cache
    return dy * (y > 0)
