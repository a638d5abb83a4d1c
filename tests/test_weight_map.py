"""kernels.weight_map against the definition: one distance transform per cell, two smallest."""
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from tinyunet.kernels.weight_map import (class_weight_map, cutoff_radius, instances_from_mask,
                                weight_map)


def reference(inst, w0=10.0, sigma=5.0, class_weights="balanced"):
    """Eq. 2 from the definition: d1, d2 from a full Euclidean distance transform of each cell."""
    cells = [c for c in np.unique(inst) if c > 0]
    wc = reference_class_weights(inst, class_weights)
    if len(cells) < 2:
        return wc
    dist = np.sort(np.stack([ndi.distance_transform_edt(inst != c) for c in cells]), axis=0)
    border = w0 * np.exp(-(dist[0] + dist[1]) ** 2 / (2 * sigma ** 2))
    return wc + np.where(inst == 0, border, 0.0)


def reference_class_weights(inst, class_weights):
    fg = inst > 0
    if class_weights is None:
        return np.ones(inst.shape)
    if class_weights == "balanced":
        classes = [c for c in (False, True) if (fg == c).any()]
        wts = {c: fg.size / (len(classes) * (fg == c).sum()) for c in classes}
        return np.where(fg, wts.get(True, 0), wts.get(False, 0))
    return np.where(fg, class_weights[1], class_weights[0])


# exact up to float32 rounding, plus the documented cut (< 1e-6 * w0)
TOL = 1e-6 * 10.0 + 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_on_random_instances(seed):
    rng = np.random.default_rng(seed)
    inst = rng.integers(1, 9, (45, 60))
    inst[rng.random(inst.shape) < 0.6] = 0
    np.testing.assert_allclose(weight_map(inst), reference(inst), rtol=0, atol=TOL)


def test_matches_reference_on_blob_cells_far_apart():
    # cells far beyond the cut-off radius from each other: the border term vanishes there
    inst = np.zeros((120, 120), np.int32)
    inst[5:15, 5:15], inst[100:110, 100:115], inst[5:12, 60:70] = 1, 2, 3
    np.testing.assert_allclose(weight_map(inst), reference(inst), rtol=0, atol=TOL)
    assert cutoff_radius(5.0) == pytest.approx(26.28, abs=0.01)


def test_matches_reference_on_isbi_labels(isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    for k in (0, 17):
        inst = instances_from_mask(labels[k], foreground=255)
        assert inst.max() > 50
        np.testing.assert_allclose(weight_map(inst), reference(inst), rtol=0, atol=TOL)


def test_two_touching_cells_weigh_most_on_the_gap_between_them():
    inst = np.zeros((30, 41), np.int32)
    inst[5:25, 5:20], inst[5:25, 21:36] = 1, 2            # a one-pixel gap at column 20
    w = weight_map(inst, class_weights=None)
    gap = w[5:25, 20]
    assert np.allclose(gap, 1 + 10 * np.exp(-4 / 50), atol=1e-5)   # d1 = d2 = 1
    assert w.max() == pytest.approx(gap.max())
    assert w[15, 2] < gap.min() and w[1, 20] < gap.min()


@pytest.mark.parametrize("cells", [0, 1])
def test_fewer_than_two_cells_give_class_weights_alone(cells):
    inst = np.zeros((20, 20), np.int32)
    if cells:
        inst[3:8, 3:8] = 1
    for cw in (None, "balanced", {0: 2.0, 1: 0.5}):
        np.testing.assert_allclose(weight_map(inst, class_weights=cw),
                                   reference_class_weights(inst, cw))


def test_class_weight_options():
    inst = np.zeros((10, 10), np.int32)
    inst[:, :3] = 1                                        # 30 % cells
    bal = class_weight_map(inst, "balanced")
    assert bal.mean() == pytest.approx(1.0)
    assert bal[0, 0] == pytest.approx(1 / (2 * 0.3)) and bal[0, 9] == pytest.approx(1 / (2 * 0.7))
    np.testing.assert_array_equal(class_weight_map(inst, {0: 3, 1: 7})[0, [0, 9]], [7, 3])
    with pytest.raises(ValueError, match="balanced"):
        class_weight_map(inst, "inverse")


def test_instances_from_mask_uses_4_connectivity():
    mask = np.array([[255, 0, 255],
                     [0, 255, 0],
                     [255, 255, 0]], np.uint8)             # diagonal neighbours are separate
    inst = instances_from_mask(mask, foreground=255)
    assert inst.max() == 3
    assert inst[1, 1] == inst[2, 1] == inst[2, 0] != inst[0, 0]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="must be integers"):
        weight_map(np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"2-D \(H, W\)"):
        weight_map(np.zeros((2, 5, 5), np.int32))
    with pytest.raises(ValueError, match=r"must be >= 0.*\[-3\]"):
        weight_map(np.array([[0, 1], [-3, 2]]))
