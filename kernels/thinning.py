"""Border thinning for V_rand and V_info (Arganda-Carreras et al. 2015), as a Numba kernel
(tinyunet.kernels.thinning).

The challenge's final scores thin the predicted membranes to one-pixel lines before comparing
segmentations, so that a thick but correct border costs nothing. Fiji does it with a classic
watershed (Vincent and Soille 1991, flooding by a FIFO queue) on the binary proposal
(RandError / VariationOfInformation ...AfterThinningN2, utils.WatershedTransform2D with
connectivity 4). On a binary image the flooding reduces to this:

1. basins: the 4-connected components of the predicted cells (label 1, 2, ...);
2. the border pixels that touch a basin (4-neighbours) are queued, in column-major order
   (x outer, y inner, the order Fiji lists pixels of equal value in);
3. first in, first out, each queued pixel p looks at its 4-neighbours in the order left, up,
   right, down:
     - a basin neighbour: p takes its label if p has none yet (or p is a line pixel that became
       one by touching a line, not by a conflict); if p already has another label, p becomes a
       line pixel (a conflict);
     - a line neighbour: p, if still unlabelled, becomes a line pixel;
     - an unvisited border neighbour: queued;
4. border pixels no basin reaches become basins of their own (their 4-connected components);
5. line pixels get label 0.

The result is a segmentation in which the predicted cells have grown into the border until they
meet, along lines about one pixel wide.
"""
import numpy as np
from numba import njit

_UNSEEN, _QUEUED, _LINE = -2, -3, 0
_DY = np.array([0, -1, 0, 1], np.int64)     # left, up, right, down (Fiji's Neighborhood2DC4)
_DX = np.array([-1, 0, 1, 0], np.int64)


@njit(cache=True)
def _fill(lab, i0, j0, value, target, queue):
    """Give `value` to the 4-connected region of pixels labelled `target` around (i0, j0)."""
    h, w = lab.shape
    lab[i0, j0] = value
    queue[0] = i0 * w + j0
    head, tail = 0, 1
    while head < tail:
        q = queue[head]
        head += 1
        for d in range(4):
            y, x = q // w + _DY[d], q % w + _DX[d]
            if 0 <= y < h and 0 <= x < w and lab[y, x] == target:
                lab[y, x] = value
                queue[tail] = y * w + x
                tail += 1


@njit(cache=True)
def thin_borders(cells):
    """int32 (H, W) segmentation of a binary prediction `cells` (bool (H, W), True = cell):
    cells grown into the border by the watershed above, 0 on the one-pixel lines between them."""
    h, w = cells.shape
    lab = np.empty((h, w), np.int32)
    for i in range(h):
        for j in range(w):
            lab[i, j] = -1 if cells[i, j] else _UNSEEN      # -1: cell pixel not yet labelled
    queue = np.empty(h * w, np.int64)
    n = 0
    for j in range(w):                                      # column-major, as Fiji numbers them
        for i in range(h):
            if lab[i, j] == -1:
                n += 1
                _fill(lab, i, j, n, -1, queue)
    # queue the border pixels that touch a basin
    head, tail = 0, 0
    for j in range(w):
        for i in range(h):
            if lab[i, j] != _UNSEEN:
                continue
            for d in range(4):
                y, x = i + _DY[d], j + _DX[d]
                if 0 <= y < h and 0 <= x < w and lab[y, x] > 0:
                    lab[i, j] = _QUEUED
                    queue[tail] = i * w + j
                    tail += 1
                    break
    while head < tail:
        q = queue[head]
        head += 1
        i, j = q // w, q % w
        by_line = False                  # p became a line pixel by touching a line
        for d in range(4):
            y, x = i + _DY[d], j + _DX[d]
            if not (0 <= y < h and 0 <= x < w):
                continue
            u = lab[y, x]
            if u > 0:
                if lab[i, j] == _QUEUED or (lab[i, j] == _LINE and by_line):
                    lab[i, j] = u
                elif lab[i, j] > 0 and lab[i, j] != u:
                    lab[i, j] = _LINE
                    by_line = False
            elif u == _LINE:
                if lab[i, j] == _QUEUED:
                    lab[i, j] = _LINE
                    by_line = True
            elif u == _UNSEEN:
                lab[y, x] = _QUEUED
                queue[tail] = y * w + x
                tail += 1
    # border regions that no cell reaches are segments of their own
    for j in range(w):
        for i in range(h):
            if lab[i, j] == _UNSEEN:
                n += 1
                _fill(lab, i, j, n, _UNSEEN, queue)
    return lab
