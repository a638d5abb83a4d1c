"""Properties on random inputs (hypothesis): tiled prediction equals one pass over the whole
mirrored image for any valid tile and image size; the weight map and the elastic deformation
equal their slow references on random instance images and fields."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyunet.infer import predict_tiled, predict_whole
from tinyunet.kernels import elastic
from tinyunet.kernels.weight_map import weight_map

from .test_elastic import scipy_deform
from .test_infer import make_model
from .test_weight_map import TOL, reference

MODEL = make_model(depth=2, base=2)
TILES = MODEL.valid_input_sizes(100)                # 44, 48, ..., 100
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(h=st.integers(5, 70), w=st.integers(5, 70), tile=st.sampled_from(TILES),
       seed=st.integers(0, 2 ** 16), tta=st.booleans())
def test_tiled_prediction_equals_one_whole_pass(h, w, tile, seed, tta):
    image = np.random.default_rng(seed).standard_normal((h, w))
    tiled = predict_tiled(MODEL, image, tile=tile, tta=tta)
    if tta:                                           # whole-image TTA: the same 8 symmetries
        from tinyunet.infer import SYMMETRIES, transform, untransform
        whole = sum(untransform(predict_whole(MODEL, np.ascontiguousarray(transform(image, s))),
                                s) for s in SYMMETRIES) / 8
    else:
        whole = predict_whole(MODEL, image)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


@SETTINGS
@given(h=st.integers(8, 40), w=st.integers(8, 40), cells=st.integers(1, 7),
       empty=st.floats(0.2, 0.8), seed=st.integers(0, 2 ** 16),
       ids=st.sampled_from([1, 300, 70000]))
def test_weight_map_equals_its_reference_on_random_instances(h, w, cells, empty, seed, ids):
    rng = np.random.default_rng(seed)
    inst = rng.integers(1, cells + 1, (h, w)) * ids    # ids far above 255 too
    inst[rng.random(inst.shape) < empty] = 0
    np.testing.assert_allclose(weight_map(inst), reference(inst), rtol=0, atol=TOL)


@SETTINGS
@given(h=st.integers(6, 40), w=st.integers(6, 40), grid=st.integers(2, 4),
       order=st.sampled_from([0, 1, 3]), sigma=st.floats(0.5, 10), seed=st.integers(0, 2 ** 16))
def test_elastic_deformation_equals_scipy(h, w, grid, order, sigma, seed):
    rng = np.random.default_rng(seed)
    image = rng.random((h, w))
    disp = elastic.random_displacement(grid=grid, sigma=sigma, rng=seed)
    got = elastic.deform_grid(image, disp, order=order)
    want = scipy_deform(image, disp, order)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
