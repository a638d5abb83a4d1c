"""Inverted dropout, used at the end of the contracting path (paper sec. 3.1).

Shapes: x (any) -> y (same). In training each element is kept with probability 1 - p and scaled
by 1 / (1 - p), so the expected activation is unchanged and evaluation is the identity.
"""
from ..backend import get_array_module


def forward(x, p, rng, train=True):
    """Returns (y, cache). `rng` is a backend.CounterRNG: the mask is drawn on x's device, the
    same mask on NumPy and CuPy for one state of the generator."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not train or p == 0.0:
        return x, None
    u = rng.random(x.shape, x.dtype, get_array_module(x))
    mask = (u >= p).astype(x.dtype) / (1.0 - p)
    return x * mask, mask


def backward(dy, cache):
    """dy -> dx = dy * mask (the identity when the forward pass dropped nothing)."""
    mask = cache
    return dy if mask is None else dy * mask
