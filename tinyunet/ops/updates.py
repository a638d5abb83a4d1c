"""The parameter updates of the optimizers and the moving average, one parameter array at a
time, in place (tinyunet.optim calls them). Their Numba twins, tinyunet.kernels.updates, make one
pass over the four arrays where these make a dozen, with the same numbers bit for bit: every
scalar is first rounded to the arrays' type, as NumPy does with a Python float, and each
operation is rounded in the same order (tests/test_kernels_conv.py).

    sgd:   v <- momentum * v - lr * (g + wd * p);  p <- p + v
    adam:  g' = g + wd * p;  m <- b1 m + (1 - b1) g';  v <- b2 v + (1 - b2) g'^2;
           p <- p - lr * (m / c1) / (sqrt(v / c2) + eps)      c1, c2: the bias corrections
    ema:   a <- d a + (1 - d) p
"""
from ..backend import get_array_module


def sgd(p, g, v, lr, momentum, wd):
    if wd:
        g = g + wd * p
    v *= momentum
    v -= lr * g
    p += v


def adam(p, g, m, v, lr, b1, b2, c1, c2, eps, wd):
    xp = get_array_module(p)
    if wd:
        g = g + wd * p
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    p -= lr * (m / c1) / (xp.sqrt(v / c2) + eps)


def ema(a, p, d):
    a *= d
    a += (1 - d) * p
