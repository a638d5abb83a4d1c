"""The warping error's inner loops (Jain et al. 2010), as Numba kernels
(tinyunet.kernels.warping): simple points, the warp, and the classification of the mismatches
that remain.

Pixels are binary: 1 = foreground (ISBI: cell interior), 4-connected; 0 = background (membrane),
8-connected. Outside the image is background.

Simple point. A pixel is simple when flipping it changes no topology: no object or hole appears
or vanishes, none splits or merges. In 2-D this is decided by its 8 neighbours alone:
    T4 = number of 4-connected foreground components among the 8 neighbours that touch one of
         the centre's 4 neighbours (up, down, left, right),
    T8 = number of 8-connected background components among the 8 neighbours,
and the pixel is simple iff T4 == 1 and T8 == 1 (Bertrand and Malandain 1994, the 2-D case).
The value of the centre itself does not matter, so the test is a 256-entry table over the
neighbours, `SIMPLE`, built once below from that definition. Fiji's WarpingError.simple2DBertrand
(patch, 4) answers the same on all 512 3x3 patches (checked against a throwaway transcription
while writing this; see tinyunet/metrics/isbi.py).

Neighbour code: bit k of the code is neighbour k of the ring, clockwise from the top-left:
    0 1 2
    7 . 3
    6 5 4
"""
import numpy as np
from numba import njit

# (dy, dx) of ring neighbour k, for k = 0..7 (bit k of a neighbour code)
RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
_FOUR_NEIGHBOURS = (1, 3, 5, 7)            # ring positions of up, right, down, left
RING_Y = np.array([d[0] for d in RING], np.int64)
RING_X = np.array([d[1] for d in RING], np.int64)
FOUR_Y = np.array([0, -1, 0, 1], np.int64)  # 4-neighbours: left, up, right, down
FOUR_X = np.array([-1, 0, 1, 0], np.int64)


def _ring_components(on, adjacent):
    """Components of the ring positions k with on[k], under `adjacent(a, b)`: a list of sets."""
    comps, seen = [], set()
    for k in range(8):
        if not on[k] or k in seen:
            continue
        comp, stack = {k}, [k]
        seen.add(k)
        while stack:
            a = stack.pop()
            for b in range(8):
                if on[b] and b not in seen and adjacent(a, b):
                    seen.add(b)
                    comp.add(b)
                    stack.append(b)
        comps.append(comp)
    return comps


def _adjacent4(a, b):
    (ya, xa), (yb, xb) = RING[a], RING[b]
    return abs(ya - yb) + abs(xa - xb) == 1


def _adjacent8(a, b):
    (ya, xa), (yb, xb) = RING[a], RING[b]
    return max(abs(ya - yb), abs(xa - xb)) == 1


def topological_numbers(code):
    """(T4, T8) of a neighbour code: 4-connected foreground components among the 8 neighbours
    that touch a 4-neighbour of the centre, and 8-connected background components."""
    fg = [(code >> k) & 1 == 1 for k in range(8)]
    bg = [not f for f in fg]
    t4 = sum(1 for c in _ring_components(fg, _adjacent4) if c & set(_FOUR_NEIGHBOURS))
    return t4, len(_ring_components(bg, _adjacent8))


def is_simple_code(code):
    """The definition, for one neighbour code: T4(foreground) == 1 and T8(background) == 1."""
    return topological_numbers(code) == (1, 1)


def neighbour_code(patch):
    """The neighbour code of the centre of a 3x3 0/1 patch."""
    return sum(int(bool(patch[1 + dy][1 + dx])) << k for k, (dy, dx) in enumerate(RING))


SIMPLE = np.array([is_simple_code(c) for c in range(256)], dtype=np.bool_)   # (256,)


@njit(cache=True, inline="always")
def _code(img, i, j):
    """Neighbour code of pixel (i, j) of a 0/1 image padded by one background pixel all round."""
    return (img[i - 1, j - 1] | (img[i - 1, j] << 1) | (img[i - 1, j + 1] << 2)
            | (img[i, j + 1] << 3) | (img[i + 1, j + 1] << 4) | (img[i + 1, j] << 5)
            | (img[i + 1, j - 1] << 6) | (img[i, j - 1] << 7))


@njit(cache=True)
def warp(source, rows, cols, simple, max_passes=-1):
    """Flip the simple mismatches of `source` toward the target until none is left to flip.

    source: uint8 (H + 2, W + 2), 0/1, padded by one background pixel, changed in place.
    rows, cols: int64 (M,), the mismatched pixels (padded coordinates) in visiting order.
    Returns the index into rows/cols of the mismatches that remain, in visiting order.

    Pass after pass, every remaining mismatch is visited in order; a simple one is flipped at
    once (later visits see it). A flip turns a mismatch into a match and a match is never
    flipped, so the mismatches of a pass are those of the previous one minus its flips, in the
    same relative order: one sort before the first pass serves them all. Stops after a pass
    that flips nothing (or after max_passes passes, if >= 0: to draw the warp step by step).
    """
    n = rows.shape[0]
    pending = np.arange(n)
    passes = 0
    while passes != max_passes:
        passes += 1
        kept = 0
        for m in range(n):
            p = pending[m]
            i, j = rows[p], cols[p]
            if simple[_code(source, i, j)]:
                source[i, j] = 1 - source[i, j]
            else:
                pending[kept] = p
                kept += 1
        if kept == n:
            break
        n = kept
    return pending[:n]


# mismatch kinds, named from the ground truth's side (the warped ground truth is the reference)
MERGE, SPLIT, HOLE_ADDITION, HOLE_DELETION, OBJECT_ADDITION, OBJECT_DELETION = range(6)
KINDS = ("merge", "split", "hole_addition", "hole_deletion", "object_addition", "object_deletion")


@njit(cache=True)
def cut_pixels(fg):
    """bool (H, W): the cut pixels (articulation points) of the 4-connected foreground, the
    pixels whose removal splits their component. One depth-first search over the whole image
    (Hopcroft and Tarjan 1973): a pixel u is a cut pixel iff it is the root of a search tree
    with two or more children, or it has a child v from whose subtree no edge climbs above u
    (low[v] >= disc[u])."""
    h, w = fg.shape
    n = h * w
    disc = np.full(n, -1, np.int64)               # discovery time, -1: not visited
    low = np.zeros(n, np.int64)
    parent = np.full(n, -1, np.int64)
    cut = np.zeros(n, np.bool_)
    stack = np.empty(n, np.int64)                 # the search path, with the next direction
    step = np.empty(n, np.int64)                  # to try from each pixel on it
    clock = 0
    for root in range(n):
        if not fg[root // w, root % w] or disc[root] >= 0:
            continue
        disc[root] = low[root] = clock
        clock += 1
        children, top = 0, 0
        stack[0], step[0] = root, 0
        while top >= 0:
            u, d = stack[top], step[top]
            if d < 4:
                step[top] = d + 1
                y, x = u // w + FOUR_Y[d], u % w + FOUR_X[d]
                if 0 <= y < h and 0 <= x < w and fg[y, x]:
                    v = y * w + x
                    if disc[v] < 0:               # tree edge: go down
                        parent[v] = u
                        disc[v] = low[v] = clock
                        clock += 1
                        children += u == root
                        top += 1
                        stack[top], step[top] = v, 0
                    elif v != parent[u]:          # back edge
                        low[u] = min(low[u], disc[v])
            else:                                 # u is done: report to its parent
                top -= 1
                if top >= 0:
                    pu = stack[top]
                    low[pu] = min(low[pu], low[u])
                    if pu != root and low[u] >= disc[pu]:
                        cut[pu] = True
        cut[root] = children >= 2
    return cut.reshape(h, w)


@njit(cache=True)
def classify(warped, comp, rows, cols):
    """Kind (MERGE, ...) of each remaining mismatch (rows, cols) of the warped ground truth.

    warped: uint8 (H, W) 0/1, the warped ground truth (unpadded); comp: int32 (H, W), its
    4-connected foreground components (0 = background). Neighbours outside the image are left
    out. With ids = the set of comp values among the 8 neighbours:
        ids == {0}:            foreground -> object deletion, background -> object addition
        ids == {one object}:   foreground -> hole addition,   background -> hole deletion
        ids == {0, one object}: background -> hole addition; foreground -> split if removing it
                                splits its neighbours into >= 2 components, else hole deletion
        more objects:          background -> merge, foreground -> split
    Fiji decides the split case by flipping the pixel and labelling the whole image again. Here:
    removing p splits its foreground neighbours iff p is a cut pixel of its component (if it
    is, each part keeps a 4-neighbour of p; if not, the rest of p's component stays connected,
    and a p with no foreground 4-neighbour is a component of its own whose removal changes
    nothing), so one search over the image (cut_pixels) answers for every mismatch.
    """
    h, w = warped.shape
    m = rows.shape[0]
    kinds = np.empty(m, np.int64)
    if m == 0:
        return kinds
    cut = cut_pixels(warped)
    ids = np.empty(8, np.int64)
    for t in range(m):
        i, j = rows[t], cols[t]
        n_ids, has_zero = 0, False
        for k in range(8):
            y, x = i + RING_Y[k], j + RING_X[k]
            if 0 <= y < h and 0 <= x < w:
                c = comp[y, x]
                new = True
                for u in range(n_ids):
                    if ids[u] == c:
                        new = False
                if new:
                    ids[n_ids] = c
                    n_ids += 1
                    has_zero = has_zero or c == 0
        centre_fg = warped[i, j] == 1
        if n_ids == 1 and has_zero:
            kinds[t] = OBJECT_DELETION if centre_fg else OBJECT_ADDITION
        elif n_ids == 1:
            kinds[t] = HOLE_ADDITION if centre_fg else HOLE_DELETION
        elif n_ids == 2:                        # always {0, one object}: a full ring is one
            if not centre_fg:
                kinds[t] = HOLE_ADDITION
            elif cut[i, j]:
                kinds[t] = SPLIT
            else:
                kinds[t] = HOLE_DELETION
        else:
            kinds[t] = SPLIT if centre_fg else MERGE
    return kinds
