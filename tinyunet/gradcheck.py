"""Central-difference gradient checks in float64 (the test suite's proof that every backward is right).

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)          error O(h^2) + O(eps * |f| / h)

With h = 1e-6 in float64 both error terms are ~1e-10 relative, so an analytic gradient that is
right agrees to ~1e-8 or better, and one that is wrong (a missing term, a transposed index) is
off by O(1). Two checks:

- `check_elementwise`: every element of x, for small inputs; returns the relative error
  ||g_num - g|| / max(||g_num||, ||g||).
- `check_directional`: for large inputs, the derivative along random directions v,
  (f(x + h v) - f(x - h v)) / (2 h) against <g, v>; returns the worst relative error.

`f` takes no arguments and reads x (which the check perturbs in place and restores).
"""
import numpy as np

from .backend import get_array_module


def _require_float64(x):
    if x.dtype != np.float64:
        raise TypeError(f"gradcheck needs float64 arrays (float32 rounding swamps the "
                        f"difference quotient), got {x.dtype}")


def relative_error(a, b):
    """||a - b|| / max(||a||, ||b||), 0 when both are zero."""
    xp = get_array_module(a)
    num = float(xp.linalg.norm((a - b).ravel()))
    den = max(float(xp.linalg.norm(a.ravel())), float(xp.linalg.norm(b.ravel())))
    return 0.0 if den == 0.0 else num / den


def numerical_gradient(f, x, h=1e-6):
    """The full central-difference gradient of scalar f() w.r.t. x (perturbed in place)."""
    _require_float64(x)
    xp = get_array_module(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)     # views: writing flat writes x
    for i in range(flat.size):
        old = float(flat[i])
        flat[i] = old + h
        fp = float(f())
        flat[i] = old - h
        fm = float(f())
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def check_elementwise(f, x, grad, h=1e-6):
    """Relative error between `grad` and the numerical gradient of f() w.r.t. every element of x."""
    return relative_error(numerical_gradient(f, x, h), grad)


def check_directional(f, x, grad, n_directions=4, h=1e-6, seed=0):
    """Worst relative error of <grad, v> against the difference quotient along random v."""
    _require_float64(x)
    xp = get_array_module(x)
    rng = np.random.default_rng(seed)
    orig = x.copy()
    worst = 0.0
    for _ in range(n_directions):
        v = xp.asarray(rng.standard_normal(x.shape))
        x[...] = orig + h * v
        fp = float(f())
        x[...] = orig - h * v
        fm = float(f())
        x[...] = orig
        num = (fp - fm) / (2 * h)
        ana = float((grad * v).sum())
        den = max(abs(num), abs(ana))
        worst = max(worst, 0.0 if den == 0 else abs(num - ana) / den)
    return worst
