"""kernels.elastic against its definition and against a plain SciPy implementation."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from tinyunet.kernels import elastic


def scipy_deform(image, displacement, order, out_shape=None, offset=(0, 0)):
    """The reference: the same field and interpolation with scipy.ndimage.map_coordinates
    (cubic B-spline for the field; `order` for the image; mirror border)."""
    h, w = out_shape or image.shape
    g0, g1 = displacement.shape[1:]
    ty, tx = np.meshgrid(np.arange(h) * (g0 - 1) / (h - 1), np.arange(w) * (g1 - 1) / (w - 1),
                         indexing="ij")
    fy, fx = (ndi.map_coordinates(displacement[c], [ty, tx], order=3, mode="mirror")
              for c in range(2))
    yy, xx = np.meshgrid(np.arange(h) + offset[0], np.arange(w) + offset[1], indexing="ij")
    return ndi.map_coordinates(image.astype(np.float64), [yy + fy, xx + fx], order=order,
                               mode="mirror")


@pytest.fixture
def image(rng):
    return rng.random((37, 45)).astype(np.float32)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_matches_scipy_map_coordinates(image, order):
    disp = elastic.random_displacement(grid=3, sigma=10, rng=1)
    got = elastic.deform_grid(image, disp, order=order)
    want = scipy_deform(image, disp, order)
    # float32 output of a float64 computation: agreement to float32 rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("grid", [2, 3, 5])
def test_window_and_grids_match_scipy(image, grid):
    disp = elastic.random_displacement(grid=grid, sigma=8, rng=2)
    kw = dict(out_shape=(30, 52), offset=(-12, 5))       # reaches past the top and right edges
    got = elastic.deform_grid(image, disp, order=3, **kw)
    np.testing.assert_allclose(got, scipy_deform(image, disp, 3, **kw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_zero_field_is_the_identity(image, order):
    np.testing.assert_allclose(elastic.deform_grid(image, np.zeros((2, 3, 3)), order=order),
                               image, atol=1e-6 if order == 3 else 0)


def test_constant_field_is_a_shift(image):
    disp = np.zeros((2, 3, 3))
    disp[0], disp[1] = 3.0, -2.0                          # out[y, x] = in[y + 3, x - 2]
    for order in (0, 1, 3):
        out = elastic.deform_grid(image, disp, order=order)
        np.testing.assert_allclose(out[:-3, 2:], image[3:, :-2], atol=1e-5)


def test_mirror_border_is_as_documented():
    row = np.arange(6, dtype=np.float64)[None, :].repeat(4, axis=0)
    disp = np.zeros((2, 3, 3))
    disp[1] = -2.0                                        # out[:, x] = in[:, x - 2]
    out = elastic.deform_grid(row, disp, order=0)
    # ... in[2], in[1], in[0], in[1], in[2] ...: x - 2 = -2 -> 2, -1 -> 1
    np.testing.assert_array_equal(out[0], [2, 1, 0, 1, 2, 3])
    far = elastic.deform_grid(row, disp, order=0, out_shape=(1, 6), offset=(0, 9))
    np.testing.assert_array_equal(far[0], [3, 2, 1, 0, 1, 2])   # 7..12 fold with period 10


def test_labels_keep_their_values_and_arrays_stay_aligned(rng):
    labels = rng.integers(0, 5, (50, 40)).astype(np.uint8) * 50
    image = labels.astype(np.float32)
    disp = elastic.random_displacement(rng=3)
    img_out, lab_out, lab_copy = elastic.deform_grid([image, labels, labels.copy()], disp,
                                                      order=[0, 0, 0])
    assert set(np.unique(lab_out)) <= set(np.unique(labels))
    assert lab_out.dtype == np.uint8
    np.testing.assert_array_equal(lab_out, lab_copy)     # same field, identical outputs
    np.testing.assert_array_equal(img_out, lab_out.astype(np.float32))


def test_elastic_deform_is_seeded_and_moves_pixels(image):
    a = elastic.elastic_deform(image, rng=5)
    b = elastic.elastic_deform(image, rng=5)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - image).mean() > 0.05
    d = elastic.random_displacement(grid=3, sigma=10, rng=np.random.default_rng(0))
    assert d.shape == (2, 3, 3)


def test_dense_field_interpolates_the_grid():
    disp = elastic.random_displacement(rng=4)
    field = elastic.dense_displacement(disp, (21, 11))
    # the spline passes through the grid values, which sit on the corners and the centre
    np.testing.assert_allclose(field[:, ::10, ::5], disp, atol=1e-12)


def test_bad_input_is_a_clear_error(image):
    disp = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="2-D arrays"):
        elastic.deform_grid(np.zeros((2, 4, 4)), disp)
    with pytest.raises(ValueError, match="order must be one of"):
        elastic.deform_grid(image, disp, order=2)
    with pytest.raises(ValueError, match="one per array"):
        elastic.deform_grid([image, image], disp, order=[3])
    with pytest.raises(ValueError, match="valid modes"):
        elastic.deform_grid(image, disp, mode="wrap")
    with pytest.raises(ValueError, match=r"shape \(2, g, g\)"):
        elastic.deform_grid(image, np.zeros((3, 3)))
