"""The CPU engine (kernels/conv_relu.py, pool.py, threads.py) against the readable ops it
replaces, and the whole network on the kernels against the whole network on the readable ops
(the route CuPy takes)."""
import numpy as np
import pytest

from tinyunet import (UNet, backend, conv3x3, conv3x3_relu, max_pool2x2, relu,
                      softmax_cross_entropy)
from tinyunet.engine import choose_engine
from tinyunet.kernels import conv_relu as k
from tinyunet.kernels import pool, threads


@pytest.fixture
def small_bands(monkeypatch):
    """Force many bands (2 output rows each) so that band edges are exercised on small images."""
    monkeypatch.setattr(k, "BAND_BYTES", 1)
    monkeypatch.setattr(k, "MIN_BAND_COLS", 1)
    assert k.band_rows(3, 12, 8, 7) == 1
    monkeypatch.setattr(k, "MIN_BAND_COLS", 24)          # 2 rows of width 12


class NaNWorkspace(backend.Workspace):
    """A workspace whose every buffer starts as NaN: what a kernel reads must be written first."""

    def take(self, size, dtype):
        return np.full(size, np.nan, dtype)


def workspace():
    return NaNWorkspace()


@pytest.mark.parametrize("shape", [(3, 9, 7), (1, 5, 12)])
def test_im2col_and_col2im_bands_equal_the_readable_ops_band_by_band(rng, shape):
    x = rng.standard_normal(shape)
    c, h, w = shape
    full = conv3x3.im2col(x[None])[0].reshape(c * 9, h - 2, w - 2)
    dcols = rng.standard_normal(full.shape)
    dx = np.zeros(shape)
    for r0, r1 in [(0, 2), (2, 3), (3, h - 2)]:             # uneven bands covering every row
        cols = np.full((c * 9, (r1 - r0) * w), np.nan)
        k.im2col_band(x, r0, r1, cols)                       # rows of width W, not W - 2
        np.testing.assert_array_equal(cols.reshape(c * 9, r1 - r0, w)[:, :, :w - 2],
                                      full[:, r0:r1])
        assert np.isfinite(cols).all()                      # the extra columns are set too
        band = np.zeros((c * 9, r1 - r0, w))                 # the extra columns are 0
        band[:, :, :w - 2] = dcols[:, r0:r1]
        k.col2im_band_add(band.reshape(c * 9, -1), r0, r1, dx)
    want = conv3x3.col2im(dcols.reshape(1, c * 9, -1), (1,) + shape)[0]
    np.testing.assert_allclose(dx, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("bands, n_threads", [("one", 1), ("one", 2), ("many", 1), ("many", 2),
                                              ("many", 3)])
def test_conv3x3_relu_kernels_equal_readable_ops(rng, request, monkeypatch, bands, n_threads):
    # several threads: each takes a run of bands; a run's first band adds dx through a halo
    monkeypatch.setattr(threads, "THREADS", n_threads)
    if bands == "many":
        request.getfixturevalue("small_bands")
    x = rng.standard_normal((2, 3, 9, 12))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    z, conv_cache = conv3x3.forward(x, w, b)
    y_ref, _ = relu.forward(z)
    y, cache = k.forward(x, w, b, workspace())
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)
    dy = rng.standard_normal(y.shape)
    dx_ref, dw_ref, db_ref = conv3x3.backward(relu.backward(dy, y_ref), conv_cache)
    dy_kept = dy.copy()
    dx, dw, db = k.backward(dy, cache, workspace())
    np.testing.assert_array_equal(dy, dy_kept)                    # dy is not overwritten
    for got, want in ((dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    none, dw2, _ = k.backward(dy.copy(), cache, workspace(), input_grad=False)
    assert none is None
    np.testing.assert_allclose(dw2, dw_ref, rtol=1e-12, atol=1e-12)
    assert k.forward(x, w, b, keep=False)[1] is None              # inference keeps nothing


def test_the_readable_composite_is_conv3x3_then_relu(rng):
    """ops.conv3x3_relu, the op the kernel twins, is exactly the two readable ops in a row."""
    x = rng.standard_normal((2, 3, 9, 12))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    z, conv_cache = conv3x3.forward(x, w, b)
    y_ref, _ = relu.forward(z)
    y, cache = conv3x3_relu.forward(x, w, b, backend.Workspace())
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape)
    want = conv3x3.backward(relu.backward(dy, y_ref), conv_cache)
    for got, ref in zip(conv3x3_relu.backward(dy, cache), want):
        np.testing.assert_array_equal(got, ref)
    assert conv3x3_relu.backward(dy, cache, input_grad=False)[0] is None


def test_relu_gradient_at_zero_is_zero_in_the_kernel():
    # a pre-activation of exactly 0 (y == 0) passes no gradient, as relu.backward documents
    x = np.zeros((1, 1, 3, 3))
    w, b = np.ones((1, 1, 3, 3)), np.zeros(1)
    y, cache = k.forward(x, w, b, workspace())
    assert y[0, 0, 0, 0] == 0.0
    _, _, db = k.backward(np.ones_like(y), cache, workspace())
    assert db[0] == 0.0


def test_max_pool_kernels_equal_readable_op_with_ties(rng):
    x = rng.integers(0, 3, (2, 3, 6, 8)).astype(np.float32)    # many ties in each window
    y_ref, cache_ref = max_pool2x2.forward(x)
    y, cache = pool.forward(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(cache[0], cache_ref[0])
    assert cache[1] == cache_ref[1]
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(pool.backward(dy, cache), max_pool2x2.backward(dy, cache_ref))


def test_band_rows_keep_the_gemm_wide_and_the_columns_small():
    for c, w in [(1, 572), (16, 570), (64, 570), (128, 282), (1024, 30)]:
        rows = k.band_rows(c, w, 4, w - 2)
        assert 1 <= rows <= w - 2
        cols = 9 * c * w * 4 * rows                                 # bytes of columns
        assert rows == 1 or cols <= k.MAX_BAND_BYTES                 # a bounded workspace
        assert rows * w >= k.MIN_BAND_COLS or (rows + 1) * 9 * c * w * 4 > k.MAX_BAND_BYTES
        if (rows - 1) * w >= k.MIN_BAND_COLS:                       # where that does not bind,
            assert cols <= max(k.BAND_BYTES, 9 * c * w * 4)           # cache-sized
    assert k.band_rows(1024, 30, 4, 28) == 7                         # deep layers: 8 MiB bands
    assert k.band_rows(64, 30, 4, 28, n_threads=2) == 14               # one band per thread at least


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_network_through_kernels_equals_network_through_readable_ops(monkeypatch, dtype, rtol):
    """The CuPy route is the readable ops; on NumPy both routes must give the same numbers."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 60, 60)).astype(dtype)
    results = []
    for engine in ("kernels", "readable"):
        model = UNet(base_channels=4, depth=2, dtype=dtype, seed=1, dropout=0.5, engine=engine)
        logits = model.forward(x, train=True)
        labels = rng.integers(0, 2, (2,) + logits.shape[2:]) if not results else results[0][2]
        _, d = softmax_cross_entropy(logits, labels)
        dx = model.backward(d)
        results.append((logits, model.grads(), labels, dx))
    (l1, g1, _, dx1), (l2, g2, _, dx2) = results
    np.testing.assert_allclose(l1, l2, rtol=rtol, atol=rtol * np.abs(l2).max())
    np.testing.assert_allclose(dx1, dx2, rtol=rtol, atol=rtol * np.abs(dx2).max())
    for name in g1:
        np.testing.assert_allclose(g1[name], g2[name], rtol=rtol, atol=rtol * np.abs(g2[name]).max(),
                                   err_msg=name)


def test_inference_keeps_nothing_and_training_skips_the_input_gradient():
    model = UNet(base_channels=2, depth=2)
    x = np.zeros((1, 1, 44, 44), np.float32)
    model.predict_proba(x)
    assert model.tape == {}
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.zeros((1, 2, 4, 4), np.float32))
    model.forward(x, keep=False)
    with pytest.raises(RuntimeError, match="keep=True"):
        model.backward(np.zeros((1, 2, 4, 4), np.float32))
    assert model.backward(np.zeros_like(model.forward(x)), input_grad=False) is None
    model = UNet(base_channels=2, depth=2, engine="readable")    # the readable route keeps it too
    assert model.backward(np.zeros_like(model.forward(x)), input_grad=False) is None


def test_one_engine_switch(monkeypatch):
    """The engine is chosen in engine.choose_engine alone: kernels on the CPU by default,
    readable with TINYUNET_KERNELS=0 or engine="readable"; kernels on a GPU are an error."""
    monkeypatch.delenv("TINYUNET_KERNELS", raising=False)
    assert UNet(base_channels=2, depth=1).engine.name == "kernels"
    assert UNet(base_channels=2, depth=1, engine="readable").engine.name == "readable"
    monkeypatch.setenv("TINYUNET_KERNELS", "0")
    assert UNet(base_channels=2, depth=1).engine.name == "readable"
    assert choose_engine("gpu").name == "readable"
    with pytest.raises(ValueError, match="CPU only"):
        choose_engine("gpu", "kernels")
    with pytest.raises(ValueError, match="valid engines are 'kernels' and 'readable'"):
        UNet(base_channels=2, depth=1, engine="fast")
