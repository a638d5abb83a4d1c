"""The CPU engine (kernels/conv_relu.py, pool.py, threads.py) against the readable ops it
replaces, and the whole network on the kernels against the whole network on the readable ops
(the route CuPy takes); the same bits on any number of threads."""
import numpy as np
import pytest

from tinyunet import (UNet, backend, conv3x3, conv3x3_relu, crop_and_concat, max_pool2x2, relu,
                      softmax_cross_entropy, up_conv2x2)
from tinyunet.engine import choose_engine
from tinyunet.kernels import concat, pool, threads, up_conv
from tinyunet.kernels import updates as kernel_updates
from tinyunet.ops import updates
from tinyunet.kernels import conv_relu as k


class NaNWorkspace(backend.Workspace):
    """A workspace whose every buffer starts as NaN: what a kernel reads must be written first."""

    def take(self, size, dtype):
        return np.full(size, np.nan, dtype)


def workspace():
    return NaNWorkspace()


def conv_both_ways(rng, shape, f, dtype="float64"):
    """The readable conv3x3 + relu and the kernel on the same random layer: (kernel, readable)
    tuples of (y, dx, dw, db)."""
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((f, shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    z, conv_cache = conv3x3.forward(x, w, b)
    y_ref, _ = relu.forward(z)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    want = (y_ref,) + conv3x3.backward(relu.backward(dy, y_ref), conv_cache)
    y, cache = k.forward(x, w, b, workspace())
    dy_kept = dy.copy()
    got = (y,) + k.backward(dy, cache, workspace())
    np.testing.assert_array_equal(dy, dy_kept)                    # dy is not overwritten
    return got, want


# (N, C, H, W), F: rows whose tail after the 24-pixel tiles is 0, <= 8 (8 filters at a time),
# 9..16, 17..23 pixels and wider than a tile; filters not a multiple of 4; more input channels
# than one chunk (KC); 1 output pixel; a batch of 2
SHAPES = [((2, 3, 9, 12), 4), ((1, 5, 14, 26), 7), ((1, 2, 11, 36), 3), ((1, 4, 7, 44), 9),
          ((1, 3, 6, 50), 6), ((1, 20, 8, 30), 5), ((1, 2, 3, 3), 1), ((2, 1, 13, 21), 16),
          ((1, 17, 5, 60), 2)]


@pytest.fixture(params=["flat", "rows"])
def layout(request, monkeypatch):
    """Both ways the kernel lays out a layer's pixels: narrow layers as one flat row (the
    default at these sizes), wide ones row by row in bands (forced here)."""
    if request.param == "rows":
        monkeypatch.setattr(k, "FLAT_BYTES", 0)
    assert k.flat(3, 9, 12, 8) == (request.param == "flat")
    return request.param


@pytest.mark.parametrize("shape, f", SHAPES)
def test_conv3x3_relu_kernel_equals_the_readable_ops_in_float64(rng, layout, shape, f):
    """Values and all three gradients against conv3x3 + relu, to the last few bits."""
    for got, want, name in zip(*conv_both_ways(rng, shape, f), ("y", "dx", "dw", "db")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(),
                                   err_msg=name)


@pytest.mark.parametrize("shape, f", SHAPES[:4])
def test_conv3x3_relu_kernel_equals_the_readable_ops_in_float32(rng, layout, shape, f):
    for got, want, name in zip(*conv_both_ways(rng, shape, f, "float32"), ("y", "dx", "dw", "db")):
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(),
                                   err_msg=name)


def test_the_kernel_skips_dx_and_keeps_nothing_for_inference(rng):
    x = rng.standard_normal((1, 3, 9, 12))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y, cache = k.forward(x, w, b)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = k.backward(dy, cache)
    none, dw2, db2 = k.backward(dy, cache, workspace(), input_grad=False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)
    assert k.forward(x, w, b, keep=False)[1] is None


@pytest.mark.parametrize("n_threads", [2, 3, 5])
def test_the_kernel_gives_the_same_bits_on_any_number_of_threads(rng, monkeypatch, layout,
                                                                 n_threads):
    """Every output number is computed by one thread in an order set by the shape alone."""
    x = rng.standard_normal((2, 9, 17, 37)).astype(np.float32)
    w = rng.standard_normal((10, 9, 3, 3)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    results = []
    for t in (1, n_threads):
        monkeypatch.setattr(threads, "THREADS", t)
        y, cache = k.forward(x, w, b)
        dy = np.cos(y)
        results.append((y,) + k.backward(dy, cache))
    for one, many in zip(*results):
        np.testing.assert_array_equal(one, many)


def test_pack_puts_each_tiles_filters_side_by_side():
    w = np.arange(6 * 2 * 9, dtype=np.float64).reshape(6, 2, 3, 3)
    wp = k.pack(w)
    assert wp.shape == (2, 18, 4)                                    # 6 filters -> 2 tiles
    np.testing.assert_array_equal(wp[0, 5], w[:4].reshape(4, 18)[:, 5])
    np.testing.assert_array_equal(wp[1, 7, :2], w[4:].reshape(2, 18)[:, 7])
    np.testing.assert_array_equal(wp[1, :, 2:], 0)                   # the missing filters: 0
    assert list(k.offsets(2, 5, 7)[[0, 1, 3, 8, 9]]) == [0, 1, 7, 16, 35]


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


@pytest.mark.parametrize("n_threads", [1, 2])
def test_max_pool_kernels_equal_readable_op_with_ties(rng, monkeypatch, n_threads):
    monkeypatch.setattr(threads, "THREADS", n_threads)
    x = rng.integers(0, 3, (2, 3, 6, 8)).astype(np.float32)    # many ties in each window
    y_ref, cache_ref = max_pool2x2.forward(x)
    y, cache = pool.forward(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(cache[0], cache_ref[0])
    assert cache[1] == cache_ref[1]
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(pool.backward(dy, cache), max_pool2x2.backward(dy, cache_ref))


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("shape, f", [((1, 5, 6, 7), 3), ((2, 8, 4, 11), 4), ((1, 3, 1, 1), 6)])
def test_up_conv_kernel_equals_the_readable_op(rng, monkeypatch, shape, f, n_threads):
    monkeypatch.setattr(threads, "THREADS", n_threads)
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal((shape[1], f, 2, 2)), rng.standard_normal(f)
    y_ref, cache_ref = up_conv2x2.forward(x, w, b)
    y, cache = up_conv.forward(x, w, b)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    for got, want in zip(up_conv.backward(dy, cache), up_conv2x2.backward(dy, cache_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="do not fit"):
        up_conv.forward(x, w[:, :, :1], b)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_crop_and_concat_kernel_equals_the_readable_op(rng, monkeypatch, n_threads):
    monkeypatch.setattr(threads, "THREADS", n_threads)
    skip, up = rng.standard_normal((2, 3, 12, 10)), rng.standard_normal((2, 4, 8, 6))
    y_ref, cache_ref = crop_and_concat.forward(skip, up)
    y, cache = concat.forward(skip, up)
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape)
    for got, want in zip(concat.backward(dy, cache), crop_and_concat.backward(dy, cache_ref)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="even difference"):
        concat.forward(skip[:, :, 1:], up)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wd", [0.0, 1e-3])
def test_the_update_kernels_equal_the_readable_updates_bit_for_bit(rng, dtype, wd):
    """SGD, Adam and the moving average in one pass give exactly the readable updates' numbers."""
    arrays = [rng.standard_normal((3, 5, 7)).astype(dtype) for _ in range(4)]
    arrays[3] = np.abs(arrays[3])                                # Adam's second moment
    for name, args in [("sgd", (0.01, 0.99, wd)),
                       ("adam", (5e-4, 0.9, 0.999, 1 - 0.9 ** 3, 1 - 0.999 ** 3, 1e-8, wd))]:
        mine, ref = [a.copy() for a in arrays], [a.copy() for a in arrays]
        n = 3 if name == "sgd" else 4
        getattr(kernel_updates, name)(*mine[:n], *args)
        getattr(updates, name)(*ref[:n], *args)
        for got, want in zip(mine, ref):
            np.testing.assert_array_equal(got, want, err_msg=name)
        assert not np.array_equal(mine[0], arrays[0])                # it did step
    mine, ref = arrays[0].copy(), arrays[0].copy()
    kernel_updates.ema(mine, arrays[1], 0.999)
    updates.ema(ref, arrays[1], 0.999)
    np.testing.assert_array_equal(mine, ref)


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


def test_a_training_step_gives_the_same_bits_on_1_and_2_threads(monkeypatch, layout):
    """One seed, the same numbers whatever NUMBA_NUM_THREADS: forward, weighted loss, backward
    of the whole network, every gradient bit for bit."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 92, 92)).astype(np.float32)
    results = []
    for t in (1, 2):
        monkeypatch.setattr(threads, "THREADS", t)
        model = UNet(base_channels=8, depth=2, seed=5, dropout=0.3)
        logits = model.forward(x, train=True)
        labels = (np.arange(logits[0, 0].size).reshape(logits.shape[2:]) % 3 == 0)[None]
        weights = np.linspace(1, 5, labels.size, dtype=np.float32).reshape(labels.shape)
        loss, d = softmax_cross_entropy(logits, labels.astype(np.int64), weights)
        model.backward(d, input_grad=False)
        results.append((logits, float(loss), model.grads()))
    (l1, loss1, g1), (l2, loss2, g2) = results
    np.testing.assert_array_equal(l1, l2)
    assert loss1 == loss2
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name], err_msg=name)


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
