import numpy as np
import pytest

from tinyunet import backend, gradcheck, softmax, softmax_cross_entropy

from . import reference as ref


def make(xp, rng, n=2, k=3, h=4, w=5):
    logits = xp.asarray(rng.standard_normal((n, k, h, w)) * 3)
    labels = xp.asarray(rng.integers(0, k, (n, h, w)))
    weights = xp.asarray(rng.uniform(0.5, 10, (n, h, w)))
    return logits, labels, weights


def test_loss_matches_reference(xp, rng):
    logits, labels, weights = make(xp, rng)
    for wts in (None, weights):
        loss, _ = softmax_cross_entropy(logits, labels, wts)
        want = ref.softmax_cross_entropy(*[None if a is None else backend.to_numpy(a)
                                           for a in (logits, labels, wts)])
        assert loss == pytest.approx(want, rel=1e-12)


def test_weighted_loss_gradcheck(xp, rng):
    logits, labels, weights = make(xp, rng)
    _, dlogits = softmax_cross_entropy(logits, labels, weights)
    err = gradcheck.check_elementwise(lambda: softmax_cross_entropy(logits, labels, weights)[0],
                                      logits, dlogits)
    assert err <= 1e-6


def test_loss_is_stable_for_huge_logits(xp):
    logits = xp.asarray([[[[1000.0]], [[-1000.0]]]])            # (1, 2, 1, 1)
    loss, d = softmax_cross_entropy(logits, xp.asarray([[[1]]]))
    assert loss == pytest.approx(2000.0)
    assert np.isfinite(backend.to_numpy(d)).all()
    p = backend.to_numpy(softmax(logits))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_loss_bad_input_is_a_clear_error(xp, rng):
    logits, labels, weights = make(xp, rng, k=2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\).*found \[2\]"):
        softmax_cross_entropy(logits, labels * 0 + 2)
    with pytest.raises(ValueError, match="labels shape"):
        softmax_cross_entropy(logits, labels[:, :-1])
    with pytest.raises(ValueError, match="weights shape"):
        softmax_cross_entropy(logits, labels, weights[:1])
    with pytest.raises(ValueError, match="must be integers"):
        softmax_cross_entropy(logits, labels.astype(xp.float64))
