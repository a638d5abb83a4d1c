"""Slow, obvious reference implementations: the oracles the fast ops are tested against.

Plain loops over output pixels, written straight from each op's defining formula, with nothing
shared with the library code.
"""
import numpy as np


def conv3x3(x, w, b):
    n, c, h, wd = x.shape
    f = w.shape[0]
    y = np.zeros((n, f, h - 2, wd - 2))
    for i in range(h - 2):
        for j in range(wd - 2):
            patch = x[:, :, i:i + 3, j:j + 3]                    # (N, C, 3, 3)
            y[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


def conv3x3_backward(dy, x, w):
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            g = dy[:, :, i, j]                                   # (N, F)
            dx[:, :, i:i + 3, j:j + 3] += np.tensordot(g, w, axes=([1], [0]))
            dw += np.tensordot(g, x[:, :, i:i + 3, j:j + 3], axes=([0], [0]))
    return dx, dw, dy.sum(axis=(0, 2, 3))


def conv1x1(x, w, b):
    return np.einsum("fc,nchw->nfhw", w[:, :, 0, 0], x) + b[:, None, None]


def max_pool2x2(x):
    n, c, h, w = x.shape
    y = np.zeros((n, c, h // 2, w // 2))
    for i in range(h // 2):
        for j in range(w // 2):
            y[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(2, 3))
    return y


def max_pool2x2_backward(dy, x):
    """Gradient to the first maximum of each window in row-major order."""
    dx = np.zeros(x.shape)
    for nn in range(x.shape[0]):
        for cc in range(x.shape[1]):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    win = x[nn, cc, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    a, d = np.unravel_index(np.argmax(win), (2, 2))   # argmax: first maximum
                    dx[nn, cc, 2 * i + a, 2 * j + d] = dy[nn, cc, i, j]
    return dx


def up_conv2x2(x, w, b):
    n, c, h, wd = x.shape
    f = w.shape[1]
    y = np.zeros((n, f, 2 * h, 2 * wd))
    for i in range(h):
        for j in range(wd):
            for a in range(2):
                for d in range(2):
                    y[:, :, 2 * i + a, 2 * j + d] = x[:, :, i, j] @ w[:, :, a, d] + b
    return y


def crop_and_concat(skip, up):
    h, w = up.shape[2:]
    top, left = (skip.shape[2] - h) // 2, (skip.shape[3] - w) // 2
    return np.concatenate([skip[:, :, top:top + h, left:left + w], up], axis=1)


def softmax_cross_entropy(logits, labels, weights=None):
    n, k, h, w = logits.shape
    total = 0.0
    for nn in range(n):
        for i in range(h):
            for j in range(w):
                a = logits[nn, :, i, j]
                p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
                wt = 1.0 if weights is None else weights[nn, i, j]
                total += wt * -np.log(p[labels[nn, i, j]])
    return total / (n * h * w)
