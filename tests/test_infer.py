import numpy as np
import pytest

from tinyunet import UNet
from tinyunet.infer import mirror_pad, predict_tiled, predict_whole, tile_grid


@pytest.fixture(scope="module")
def model():
    m = UNet(base_channels=4, depth=2, seed=0, dtype="float64")
    for k, v in m.params.items():         # non-trivial biases so outputs vary across the image
        if k.endswith("bias"):
            v[...] = np.random.default_rng(1).standard_normal(v.shape) * 0.2
    return m


@pytest.mark.parametrize("tile", [44, 60, 92, 140])
def test_tiled_equals_whole_image_for_any_tile(model, tile):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((71, 53))
    whole = predict_whole(model, image)
    tiled = predict_tiled(model, image, tile=tile, batch=3)
    assert tiled.shape == (2, 71, 53)
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
