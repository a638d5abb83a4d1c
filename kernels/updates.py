"""The optimizers' and the moving average's updates in one pass over each parameter array: the
Numba twins of tinyunet.ops.updates (same signatures, the same numbers bit for bit: each scalar
is rounded to the arrays' type first, as NumPy rounds a Python float, and every operation is
rounded in the readable op's order; no fused multiply-add, no reassociation). The readable
updates make a dozen passes over the arrays, each with a temporary; these make one.
"""
import numpy as np
from numba import njit


def sgd(p, g, v, lr, momentum, wd):
    t = p.dtype.type
    _sgd(p.reshape(-1), g.reshape(-1), v.reshape(-1), t(lr), t(momentum), t(wd), bool(wd))


def adam(p, g, m, v, lr, b1, b2, c1, c2, eps, wd):
    t = p.dtype.type
    _adam(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(lr), t(b1), t(1 - b1),
          t(b2), t(1 - b2), t(c1), t(c2), t(eps), t(wd), bool(wd))


def ema(a, p, d):
    t = a.dtype.type
    _ema(a.reshape(-1), p.reshape(-1), t(d), t(1 - d))


@njit(nogil=True, cache=True)
def _sgd(p, g, v, lr, momentum, wd, decay):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if decay else g[i]
        vi = v[i] * momentum
        vi = vi - lr * gi
        v[i] = vi
        p[i] = p[i] + vi


# error_model="numpy": a division by zero gives inf or NaN as in NumPy, instead of the check for
# a Python ZeroDivisionError that keeps LLVM from vectorising the loop (7x slower)
@njit(nogil=True, cache=True, error_model="numpy")
def _adam(p, g, m, v, lr, b1, one_b1, b2, one_b2, c1, c2, eps, wd, decay):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if decay else g[i]
        mi = m[i] * b1
        mi = mi + one_b1 * gi
        vi = v[i] * b2
        vi = vi + one_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


@njit(nogil=True, cache=True)
def _ema(a, p, d, one_d):
    for i in range(a.size):
        a[i] = a[i] * d + one_d * p[i]
