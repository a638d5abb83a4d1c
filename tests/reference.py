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


# ---- warping error (Jain et al. 2010, as Fiji's WarpingError computes it) -------------------

def _flood(mask, start, steps):
    """Pixels of `mask` reachable from `start` through `steps`: a set of (y, x)."""
    seen, stack = {start}, [start]
    while stack:
        y, x = stack.pop()
        for dy, dx in steps:
            q = (y + dy, x + dx)
            if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and q not in seen:
                seen.add(q)
                stack.append(q)
    return seen


STEPS4 = ((1, 0), (-1, 0), (0, 1), (0, -1))
STEPS8 = STEPS4 + ((1, 1), (1, -1), (-1, 1), (-1, -1))


def components(mask, steps):
    """Connected components of a boolean image: a list of sets of (y, x)."""
    comps, done = [], set()
    for p in zip(*np.nonzero(mask)):
        p = (int(p[0]), int(p[1]))
        if p not in done:
            comp = _flood(mask, p, steps)
            done |= comp
            comps.append(comp)
    return comps


def is_simple(patch):
    """Simple-point test of the centre of a 3x3 0/1 patch, from the definition: among the 8
    neighbours, one 4-connected foreground component touching a 4-neighbour of the centre, and
    one 8-connected background component."""
    ring = np.array(patch, bool)
    fg, bg = ring.copy(), ~ring
    fg[1, 1] = bg[1, 1] = False
    t4 = sum(1 for c in components(fg, STEPS4) if c & {(0, 1), (1, 0), (1, 2), (2, 1)})
    return t4 == 1 and len(components(bg, STEPS8)) == 1


def warp_ground_truth(prob, truth, threshold):
    """Fiji's simple-point warp, pass by pass: list the mismatches column by column, sort them
    stably by float32 |p - t|, largest first, flip each simple one at once; stop after a pass
    that flips nothing. Returns (warped bool (H, W), remaining [(y, x)] of the last pass)."""
    h, w = truth.shape
    src = np.zeros((h + 2, w + 2), np.uint8)
    src[1:-1, 1:-1] = truth
    pred = np.zeros((h + 2, w + 2), np.uint8)
    pred[1:-1, 1:-1] = prob > threshold
    while True:
        mism = [(y, x) for x in range(1, w + 1) for y in range(1, h + 1) if src[y, x] != pred[y, x]]
        key = [np.float32(abs(float(np.float32(prob[y - 1, x - 1])) - threshold)) for y, x in mism]
        order = sorted(range(len(mism)), key=lambda k: -key[k])        # sorted() is stable
        flips = 0
        for k in order:
            y, x = mism[k]
            if is_simple(src[y - 1:y + 2, x - 1:x + 2]):
                src[y, x] = 1 - src[y, x]
                flips += 1
        if flips == 0:
            return src[1:-1, 1:-1].astype(bool), [(y - 1, x - 1) for y, x in mism]


def classify_mismatch(warped, y, x):
    """Fiji's classifyMismatches2d for one remaining mismatch, whole image (no radius): the ids
    of the 4-connected foreground components of the warped ground truth among the 8 neighbours
    inside the image; for a foreground pixel with background and one object around, flip it and
    label the whole image again."""
    from scipy import ndimage as ndi
    four = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])

    def ids(lab):
        h, w = lab.shape
        return {int(lab[y + dy, x + dx]) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w}

    lab = ndi.label(warped, four)[0]
    around, fg = ids(lab), bool(warped[y, x])
    if around == {0}:
        return "object_deletion" if fg else "object_addition"
    if len(around) == 1:
        return "hole_addition" if fg else "hole_deletion"
    if len(around) == 2:
        if not fg:
            return "hole_addition"
        flipped = warped.copy()
        flipped[y, x] = False
        return "split" if len(ids(ndi.label(flipped, four)[0])) > 2 else "hole_deletion"
    return "split" if fg else "merge"


def thin_borders(cells):
    """Fiji's classic watershed (utils.WatershedTransform2D, connectivity 4) on a binary
    prediction, literally: level 0 = cells, level 1 = border; pixels of one level in column-major
    order; a FIFO; neighbours left, up, right, down. 0 = line pixels."""
    from collections import deque
    h, w = cells.shape
    MASK, WSHED, INIT, INQUEUE = -2, 0, -1, -3
    lab = np.full((h, w), INIT)
    flag, current = False, 0
    nbrs = lambda i, j: [(i, j - 1), (i - 1, j), (i, j + 1), (i + 1, j)]
    inside = lambda i, j: 0 <= i < h and 0 <= j < w
    for level in (True, False):
        pixels = [(i, j) for j in range(w) for i in range(h) if cells[i, j] == level]
        fifo = deque()
        for i, j in pixels:
            lab[i, j] = MASK
            if any(inside(u, v) and lab[u, v] >= WSHED for u, v in nbrs(i, j)):
                fifo.append((i, j))
                lab[i, j] = INQUEUE
        while fifo:
            i, j = fifo.popleft()
            for u, v in nbrs(i, j):
                if not inside(u, v):
                    continue
                if lab[u, v] > 0:
                    if lab[i, j] == INQUEUE or (lab[i, j] == WSHED and flag):
                        lab[i, j] = lab[u, v]
                    elif lab[i, j] > 0 and lab[i, j] != lab[u, v]:
                        lab[i, j] = WSHED
                        flag = False
                elif lab[u, v] == WSHED:
                    if lab[i, j] == INQUEUE:
                        lab[i, j] = WSHED
                        flag = True
                elif lab[u, v] == MASK:
                    lab[u, v] = INQUEUE
                    fifo.append((u, v))
        for i, j in pixels:
            if lab[i, j] == MASK:
                current += 1
                lab[i, j] = current
                fifo.append((i, j))
                while fifo:
                    a, b = fifo.popleft()
                    for u, v in nbrs(a, b):
                        if inside(u, v) and lab[u, v] == MASK:
                            lab[u, v] = current
                            fifo.append((u, v))
    return np.where(lab == INIT, 0, lab)
