import numpy as np
import pytest

from tinyunet.infer import mirror_pad, predict_tiled, predict_whole, tile_grid

from .conftest import small_model


def make_model(depth, base, dtype="float64"):
    """Non-trivial biases, so that the outputs vary across the image."""
    return small_model(depth, base, dtype=dtype, biases=True)


@pytest.fixture(scope="module")
def model():
    return make_model(depth=2, base=4)


def mirror_reference(image, top, bottom, left, right):
    """The paper's mirror (fig. 2) by index: position -k reads pixel k, position n-1+k reads
    pixel n-1-k (the edge pixel is not repeated); farther out it reflects again, period 2(n-1)."""
    def source(i, n):
        i %= 2 * (n - 1)
        return i if i < n else 2 * (n - 1) - i
    c, h, w = image.shape
    out = np.empty((c, h + top + bottom, w + left + right), image.dtype)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = image[:, source(i - top, h), source(j - left, w)]
    return out


def test_mirror_pad_mirrors_about_the_edge_pixels():
    image = np.arange(2 * 4 * 5, dtype=np.float64).reshape(2, 4, 5)
    padded = mirror_pad(image, 2, 1, 3, 0)
    assert padded.shape == (2, 7, 8)
    np.testing.assert_array_equal(padded[0, 2, :4], [3, 2, 1, 0])      # ... x2 x1 | x0 x1 ...
    np.testing.assert_array_equal(padded[0, :3, 3], [10, 5, 0])        # column 0, rows 2 1 0
    np.testing.assert_array_equal(padded, mirror_reference(image, 2, 1, 3, 0))
    # pads larger than the image reflect again (a 92 px tile margin around a small image)
    np.testing.assert_array_equal(mirror_pad(image, 9, 7, 6, 11),
                                  mirror_reference(image, 9, 7, 6, 11))


@pytest.mark.parametrize("tile", [44, 60, 92, 140])
def test_tiled_equals_whole_image_for_any_tile(model, tile):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((71, 53))
    whole = predict_whole(model, image)
    tiled = predict_tiled(model, image, tile=tile, batch=3)
    assert tiled.shape == (2, 71, 53)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("depth, tile", [(3, 100), (3, 116), (4, 204), (4, 220)])
def test_tiled_equals_whole_image_for_deeper_networks(depth, tile):
    """The tile step must be a multiple of 2^depth. Outputs are 4 px modulo 2^depth, so at depth
    3 a step aligned to 4 px only would shift the pooling grid; at depth 2 (and from 8 to 16 px
    at depth 4) the two alignments happen to give the same step, and the smaller tests pass."""
    model = make_model(depth, base=2)
    image = np.random.default_rng(depth).standard_normal((45, 37))
    whole = predict_whole(model, image)
    tiled = predict_tiled(model, image, tile=tile, batch=4)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


def test_unaligned_tiles_would_leave_seams(model):
    """Why the step is a multiple of 2^depth: a tile shifted by 1 px sees the pooling grid
    shifted and gives different numbers where it overlaps its neighbour."""
    rng = np.random.default_rng(0)
    image = mirror_pad(rng.standard_normal((1, 40, 40)), 20, 20, 20, 20)
    a = model.predict_proba(image[None, :, 0:60, 0:60])[0]
    b = model.predict_proba(image[None, :, 1:61, 0:60])[0]
    assert np.abs(a[:, 1:] - b[:, :-1]).max() > 1e-3


def test_tta_of_a_symmetric_model_output_is_consistent(model):
    image = np.random.default_rng(3).standard_normal((50, 50))
    p = predict_tiled(model, image, tile=60, tta=True)
    assert p.shape == (2, 50, 50)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-6)
    # TTA of a rotated image is the rotated TTA result (the 8 transforms form a group)
    q = predict_tiled(model, np.rot90(image).copy(), tile=60, tta=True)
    np.testing.assert_allclose(np.rot90(p, axes=(1, 2)), q, atol=1e-6)


def test_tile_grid_and_errors(model):
    origins, extent = tile_grid(100, 36, 16)      # step 32
    assert origins == [0, 32, 64] and extent == 100
    with pytest.raises(ValueError, match="tile size 46 .* 44 or 48"):
        predict_tiled(model, np.zeros((30, 30)), tile=46)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        predict_tiled(model, np.zeros((1, 1, 30, 30)), tile=44)
