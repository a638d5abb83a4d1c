"""Pixel-wise softmax and weighted cross-entropy, the paper's energy function (sec. 3, eq. 1).

Shapes: logits (N, K, H, W), labels (N, H, W) integers in [0, K), weights (N, H, W) or None.

    p_k(x) = exp(a_k(x)) / sum_k' exp(a_k'(x))                 (softmax over the class axis)
    loss   = (1 / (N H W)) * sum_x w(x) * -log p_{l(x)}(x)       (w = 1 without a weight map)

The paper prints E = sum w log p without the minus sign; the loss minimised is -sum w log p. We
divide by the number of pixels N H W, a constant for a given tile size and batch, so one learning
rate suits any tile size; it is the paper's sum up to that constant. We do not divide by sum w:
that would cancel the weights' overall size, whereas here a tile with many heavily weighted border
pixels has a larger loss and pulls harder, as in the paper. log p is a - logsumexp(a), stable for
any logits.

    d loss / d a_k(x) = w(x) * (p_k(x) - [k == l(x)]) / (N H W)
"""
from ..backend import get_array_module


def _check(logits, labels, weights, values=True):
    xp = get_array_module(logits)
    if logits.ndim != 4:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, K, H, W), got {logits.shape}")
    n, k, h, w = logits.shape
    if labels.shape != (n, h, w):
        raise ValueError(f"softmax_cross_entropy: labels shape {labels.shape} does not match the "
                         f"logits (N, H, W) = {(n, h, w)}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got {labels.dtype}")
    if weights is not None and weights.shape != (n, h, w):
        raise ValueError(f"softmax_cross_entropy: weights shape {weights.shape} does not match "
                         f"the labels {(n, h, w)}")
    if not values:
        return
    lo, hi = int(labels.min()), int(labels.max())        # reads two numbers back from a GPU
    if lo < 0 or hi >= k:
        bad = xp.unique(labels[(labels < 0) | (labels >= k)])
        raise ValueError(f"softmax_cross_entropy: labels must be in [0, {k}) for K = {k} classes; "
                         f"found {bad.tolist()[:10]}")


def log_softmax(logits):
    """log p over axis 1 via log-sum-exp: a - max - log(sum exp(a - max))."""
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    """Class probabilities (N, K, H, W)."""
    xp = get_array_module(logits)
    return xp.exp(log_softmax(logits))


def softmax_cross_entropy(logits, labels, weights=None, check_labels=True):
    """Returns (loss, dlogits): a 0-d float64 array on the logits' device (float(loss) reads
    it) and an array shaped like logits.

    check_labels=False skips the check that every label is in [0, K), which reads the labels'
    range back to the host: for labels checked before (the training samples), so that a step on
    a GPU never waits for the host. Shapes and dtypes are always checked."""
    xp = get_array_module(logits)
    _check(logits, labels, weights, check_labels)
    n, k, h, w = logits.shape
    logp = log_softmax(logits)                                     # (N, K, H, W)
    lab = labels.astype(xp.int64)[:, None]                        # (N, 1, H, W)
    nll = -xp.take_along_axis(logp, lab, axis=1)[:, 0]            # (N, H, W)
    scale = 1.0 / (n * h * w)
    wmap = xp.ones_like(nll) if weights is None else weights.astype(logits.dtype)
    loss = (wmap * nll).sum().astype(xp.float64) * scale          # stays on the device
    # dlogits = w * (p - onehot(l)) / (N H W)
    classes = xp.arange(k).reshape(1, k, 1, 1)
    dlogits = xp.exp(logp) - (classes == lab)                      # p - onehot(l)
    dlogits *= (wmap * scale)[:, None]
    return loss, dlogits
