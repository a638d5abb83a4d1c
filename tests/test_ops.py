"""Every op: fast forward == slow reference, backward == reference and == central differences.

Each op is checked as the scalar f = sum(op(x) * G) for a fixed random G, whose gradient is
op.backward(G). Float64, small shapes, fixed seeds. Runs on NumPy, and on CuPy where present.
"""
import numpy as np
import pytest

from tinyunet import (backend, conv1x1, conv3x3, crop_and_concat, dropout, gradcheck,
                      max_pool2x2, relu, up_conv2x2)

from . import reference as ref

TOL = 1e-6            # relative error bound of the float64 gradient checks


def arr(xp, rng, *shape):
    return xp.asarray(rng.standard_normal(shape))


def np_(a):
    return backend.to_numpy(a)


def check_op_grads(xp, rng, fwd, bwd, inputs):
    """Gradient-check fwd(*inputs) with backward bwd(G, cache) -> grads (one per input)."""
    y, _ = fwd(*inputs)
    g_out = arr(xp, rng, *y.shape)
    _, cache = fwd(*inputs)
    grads = bwd(g_out, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for x, g in zip(inputs, grads):
        err = gradcheck.check_elementwise(lambda: (fwd(*inputs)[0] * g_out).sum(), x, g)
        assert err <= TOL, f"relative error {err:.2e} for input of shape {x.shape}"


def test_conv3x3_matches_reference(xp, rng):
    x, w, b = arr(xp, rng, 2, 3, 7, 6), arr(xp, rng, 4, 3, 3, 3), arr(xp, rng, 4)
    y, cache = conv3x3.forward(x, w, b)
    assert y.shape == (2, 4, 5, 4)
    np.testing.assert_allclose(np_(y), ref.conv3x3(np_(x), np_(w), np_(b)), rtol=1e-12, atol=1e-12)
    dy = arr(xp, rng, *y.shape)
    for got, want in zip(conv3x3.backward(dy, cache), ref.conv3x3_backward(np_(dy), np_(x), np_(w))):
        np.testing.assert_allclose(np_(got), want, rtol=1e-12, atol=1e-12)


def test_conv3x3_gradcheck(xp, rng):
    inputs = (arr(xp, rng, 2, 2, 5, 6), arr(xp, rng, 3, 2, 3, 3), arr(xp, rng, 3))
    check_op_grads(xp, rng, conv3x3.forward, conv3x3.backward, inputs)


def test_im2col_col2im_are_adjoint(xp, rng):
    # <im2col(x), c> == <x, col2im(c)>: the defining property of the backward's col2im
    x = arr(xp, rng, 2, 3, 6, 5)
    c = arr(xp, rng, 2, 27, 4 * 3)
    lhs = float((conv3x3.im2col(x) * c).sum())
    rhs = float((x * conv3x3.col2im(c, x.shape)).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)


def test_conv3x3_rejects_bad_shapes(xp, rng):
    with pytest.raises(ValueError, match="w \\(F, C, 3, 3\\)"):
        conv3x3.forward(arr(xp, rng, 1, 2, 5, 5), arr(xp, rng, 3, 4, 3, 3), arr(xp, rng, 3))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        conv3x3.forward(arr(xp, rng, 1, 2, 2, 5), arr(xp, rng, 3, 2, 3, 3), arr(xp, rng, 3))


def test_conv1x1_matches_reference_and_gradcheck(xp, rng):
    x, w, b = arr(xp, rng, 2, 3, 4, 5), arr(xp, rng, 2, 3, 1, 1), arr(xp, rng, 2)
    y, _ = conv1x1.forward(x, w, b)
    np.testing.assert_allclose(np_(y), ref.conv1x1(np_(x), np_(w), np_(b)), rtol=1e-12)
    check_op_grads(xp, rng, conv1x1.forward, conv1x1.backward, (x, w, b))


def test_relu_gradcheck(xp, rng):
    x = arr(xp, rng, 2, 3, 4, 4)
    y, _ = relu.forward(x)
    np.testing.assert_array_equal(np_(y), np.maximum(np_(x), 0))
    check_op_grads(xp, rng, relu.forward, relu.backward, (x,))


def test_relu_gradient_at_exactly_zero_is_zero(xp):
    """Documented: dx = dy where x > 0, else 0 (also at x == 0, where the derivative jumps)."""
    x = xp.asarray([[-1.0, 0.0, -0.0, 1e-300, 2.0]])
    y, cache = relu.forward(x.copy())
    dx = np_(relu.backward(xp.full_like(x, 3.0), cache))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0, 3.0, 3.0]])
    y, cache = relu.forward(x.copy(), inplace=True)             # as the U-Net calls it
    np.testing.assert_array_equal(np_(relu.backward(xp.full_like(x, 3.0), cache)), dx)


def test_max_pool_matches_reference(xp, rng):
    x = arr(xp, rng, 2, 3, 6, 8)
    y, cache = max_pool2x2.forward(x)
    np.testing.assert_array_equal(np_(y), ref.max_pool2x2(np_(x)))
    dy = arr(xp, rng, *y.shape)
    np.testing.assert_array_equal(np_(max_pool2x2.backward(dy, cache)),
                                  ref.max_pool2x2_backward(np_(dy), np_(x)))
    check_op_grads(xp, rng, max_pool2x2.forward, max_pool2x2.backward, (x,))


def test_max_pool_ties_go_to_the_first_maximum_only(xp):
    x = xp.asarray([[[[1.0, 5.0], [5.0, 5.0]]]])       # three tied maxima in one window
    y, cache = max_pool2x2.forward(x)
    dx = np_(max_pool2x2.backward(xp.ones_like(y), cache))
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_max_pool_odd_size_is_a_clear_error(xp, rng):
    with pytest.raises(ValueError, match="must be even"):
        max_pool2x2.forward(arr(xp, rng, 1, 1, 5, 4))


def test_up_conv_matches_reference_and_gradcheck(xp, rng):
    x, w, b = arr(xp, rng, 2, 4, 3, 2), arr(xp, rng, 4, 2, 2, 2), arr(xp, rng, 2)
    y, _ = up_conv2x2.forward(x, w, b)
    assert y.shape == (2, 2, 6, 4)
    np.testing.assert_allclose(np_(y), ref.up_conv2x2(np_(x), np_(w), np_(b)), rtol=1e-12)
    check_op_grads(xp, rng, up_conv2x2.forward, up_conv2x2.backward, (x, w, b))


def test_crop_and_concat_matches_reference_and_gradcheck(xp, rng):
    skip, up = arr(xp, rng, 2, 3, 9, 8), arr(xp, rng, 2, 2, 5, 4)
    y, _ = crop_and_concat.forward(skip, up)
    assert y.shape == (2, 5, 5, 4)
    np.testing.assert_array_equal(np_(y), ref.crop_and_concat(np_(skip), np_(up)))
    check_op_grads(xp, rng, crop_and_concat.forward, crop_and_concat.backward, (skip, up))
    with pytest.raises(ValueError, match="smaller than the upsampled"):
        crop_and_concat.forward(up, skip)


def test_crop_is_centred_and_an_odd_difference_is_an_error(xp, rng):
    skip = xp.asarray(np.arange(10 * 8, dtype=np.float64).reshape(1, 1, 10, 8))
    up = arr(xp, rng, 1, 1, 4, 6)                       # 3 rows cut on each side, 1 column
    y, _ = crop_and_concat.forward(skip, up)
    np.testing.assert_array_equal(np_(y[0, 0]), np_(skip[0, 0, 3:7, 1:7]))
    for up_hw in [(5, 6), (4, 5), (9, 3)]:               # 10 - 5 = 5, 8 - 5 = 3: no centre
        with pytest.raises(ValueError, match=r"differ by \d+x\d+ px; a centre crop needs an even"):
            crop_and_concat.forward(skip, arr(xp, rng, 1, 1, *up_hw))


def test_dropout_is_inverted_and_gradchecks(xp, rng):
    x = arr(xp, rng, 4, 8, 16, 16)
    drng = backend.CounterRNG(0)
    y, mask = dropout.forward(x, 0.5, drng, train=True)
    kept = np_(mask) > 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(np_(y)[kept], 2 * np_(x)[kept])
    assert dropout.forward(x, 0.5, drng, train=False)[0] is x      # identity in evaluation
    small = arr(xp, rng, 2, 3, 4, 4)
    _, small_mask = dropout.forward(small, 0.5, drng, train=True)
    fixed = lambda x_: (x_ * small_mask, small_mask)             # the same mask on every call
    check_op_grads(xp, rng, fixed, dropout.backward, (small,))


def test_a_wrong_backward_fails_the_check(xp, rng):
    """The check must be able to fail: conv3x3 with a backward that forgets the flip (uses w
    transposed spatially) is rejected, as is a max pool that sends gradient to every tie."""
    def wrong_conv_backward(dy, cache):
        x, w = cache
        dx, dw, db = conv3x3.backward(dy, (x, w[:, :, ::-1, ::-1]))
        return dx, dw, db

    inputs = (arr(xp, rng, 1, 2, 5, 5), arr(xp, rng, 2, 2, 3, 3), arr(xp, rng, 2))
    with pytest.raises(AssertionError, match="relative error"):
        check_op_grads(xp, rng, conv3x3.forward, wrong_conv_backward, inputs)

    def wrong_pool_backward(dy, cache):   # spreads dy over the whole window
        return xp.repeat(xp.repeat(dy, 2, axis=2), 2, axis=3)

    with pytest.raises(AssertionError, match="relative error"):
        check_op_grads(xp, rng, max_pool2x2.forward, wrong_pool_backward, (arr(xp, rng, 1, 1, 4, 4),))


def test_gradcheck_requires_float64(xp):
    x = xp.ones(3, dtype=xp.float32)
    with pytest.raises(TypeError, match="float64"):
        gradcheck.check_elementwise(lambda: x.sum(), x, x)
