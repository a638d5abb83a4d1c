import copy

import numpy as np
import pytest

import tinyunet
from tinyunet import SGD, Adam, UNet, backend, gradcheck, softmax_cross_entropy


def test_paper_network_size():
    model = UNet()
    assert model.num_parameters() == 31_030_658
    assert model.num_convolutions() == 23
    assert model.output_size(572) == 388


def fan_in(name, shape):
    """Inputs of one output neuron: C_in * kh * kw for a conv (F, C, kh, kw); for an up-conv
    (C, C/2, 2, 2) each output pixel sees one input pixel of each of the C channels."""
    return shape[0] if name.endswith("upconv.weight") else shape[1] * shape[2] * shape[3]


def test_paper_initialisation_std():
    """paper sec. 3: std sqrt(2/N), N = inputs of one neuron (9 * 64 = 576 for a 3x3 conv on 64
    channels). Checked on every layer, most with fan-in != fan-out (1 -> 64, 512 -> 1024,
    128 -> 64, up-convs, 64 -> 2), so an initialisation on the fan-out fails."""
    model = UNet()
    sd = model.state_dict()
    assert fan_in("down0.conv2.weight", sd["down0.conv2.weight"].shape) == 576
    for name, w in sd.items():
        if name.endswith(".bias"):
            assert not w.any(), f"{name} should start at zero"
            continue
        # the sample std of n Gaussian values is off by ~1/sqrt(2n) relative: allow 5 of those
        tol = 5 / np.sqrt(2 * w.size)
        assert w.std() == pytest.approx(np.sqrt(2 / fan_in(name, w.shape)), rel=tol), name
        assert abs(w.mean()) < 5 * w.std() / np.sqrt(w.size), name


def test_invalid_size_names_the_nearest_valid_sizes():
    model = UNet(base_channels=2)
    with pytest.raises(ValueError, match="556 or 572"):
        model.output_size(570)
    with pytest.raises(ValueError, match="input width 570 .* 556 or 572"):
        model.forward(np.zeros((1, 1, 572, 570), np.float32))


def test_valid_sizes_follow_16k_plus_124():
    sizes = tinyunet.valid_input_sizes(depth=4, max_size=700)
    assert sizes == list(range(188, 701, 16))
    assert all((s - 124) % 16 == 0 for s in sizes)
    assert tinyunet.output_size(188) == 4


def test_forward_shapes_and_input_errors():
    model = UNet(in_channels=2, n_classes=3, base_channels=2, depth=2)
    assert model.forward(np.zeros((2, 2, 60, 44))).shape == (2, 3, 20, 4)
    with pytest.raises(ValueError, match="3 channels, the model expects 2"):
        model.forward(np.zeros((1, 3, 44, 44)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model.forward(np.zeros((44, 44)))
    with pytest.raises(RuntimeError, match="forward"):
        UNet(base_channels=2, depth=1).backward(np.zeros((1, 2, 4, 4)))


def test_state_dict_layout_and_load_errors():
    model = UNet(base_channels=4, depth=2)
    sd = model.state_dict()
    keys = list(sd)
    assert keys[0] == "down0.conv1.weight" and keys[-1] == "out.bias"
    assert sd["down0.conv1.weight"].shape == (4, 1, 3, 3)          # (out, in, kh, kw)
    assert sd["up1.upconv.weight"].shape == (16, 8, 2, 2)          # (in, out, 2, 2)
    assert sd["up1.upconv.bias"].shape == (8,)
    assert list(model.grads()) == keys
    other = UNet(base_channels=4, depth=2, seed=1)
    other.load_state_dict({k: v.copy() for k, v in sd.items()})
    for k in keys:
        np.testing.assert_array_equal(other.state_dict()[k], sd[k])
    bad = dict(sd, **{"out.weight": np.zeros((3, 4, 1, 1))})
    with pytest.raises(ValueError, match=r"'out.weight' has shape \(3, 4, 1, 1\).*\(2, 4, 1, 1\)"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing keys \\['out.bias'\\]"):
        other.load_state_dict({k: v for k, v in sd.items() if k != "out.bias"})


def small_problem(depth=2, base=4, size=44, dropout=0.0):
    rng = np.random.default_rng(0)
    model = UNet(base_channels=base, depth=depth, dtype="float64", dropout=dropout, seed=3)
    for k, v in model.params.items():                  # non-zero biases exercise db too
        if k.endswith("bias"):
            v[...] = rng.standard_normal(v.shape) * 0.1
    x = rng.standard_normal((1, 1, size, size))
    out = model.output_size(size)
    labels = rng.integers(0, 2, (1, out, out))
    weights = rng.uniform(1, 10, (1, out, out))
    return model, x, labels, weights


def test_whole_unet_gradcheck_with_weighted_loss():
    """Depth 2, base 4, 44x44 -> 4x4 output: every parameter and the input, float64."""
    model, x, labels, weights = small_problem()

    def f():
        return softmax_cross_entropy(model.forward(x), labels, weights)[0]

    _, dlogits = softmax_cross_entropy(model.forward(x), labels, weights)
    dx = model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.grads().items()}
    for name, p in model.params.items():
        check = gradcheck.check_elementwise if p.size <= 40 else gradcheck.check_directional
        err = check(f, p, grads[name])
        assert err <= 1e-6, f"{name}: relative error {err:.2e}"
    assert gradcheck.check_directional(f, x, dx) <= 1e-6


def test_unet_with_dropout_backward_uses_the_forward_mask():
    model, x, labels, weights = small_problem(dropout=0.5)
    # the mask must be the same in every evaluation of f: restore the rng state before each
    state = model.rng.state
    logits = model.forward(x, train=True)
    _, dlogits = softmax_cross_entropy(logits, labels, weights)
    model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.grads().items()}

    def f():
        model.rng.state = state
        return softmax_cross_entropy(model.forward(x, train=True), labels, weights)[0]

    f()
    for name in ("bottom.conv2.weight", "down0.conv1.weight"):
        assert gradcheck.check_directional(f, model.params[name], grads[name]) <= 1e-6


@pytest.mark.parametrize("opt_cls, kw", [(SGD, dict(lr=0.05, momentum=0.9)),
                                         (Adam, dict(lr=0.01)),
                                         (SGD, dict(lr=0.05, momentum=0.99, weight_decay=1e-4))])
def test_optimizers_reduce_the_loss(opt_cls, kw):
    model, x, labels, weights = small_problem()
    opt = opt_cls(model, **kw)
    losses = []
    for _ in range(15):
        loss, d = softmax_cross_entropy(model.forward(x), labels, weights)
        model.backward(d)
        opt.step()
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]


def test_sgd_update_rule():
    model = UNet(base_channels=1, depth=1, dtype="float64")
    p0 = {k: v.copy() for k, v in model.params.items()}
    for g in model.grads().values():
        g[...] = 1.0
    opt = SGD(model, lr=0.1, momentum=0.5)
    opt.step()
    opt.step()          # v1 = -0.1, v2 = 0.5 * -0.1 - 0.1 = -0.15: total -0.25
    for k, v in model.params.items():
        np.testing.assert_allclose(v, p0[k] - 0.25)
    state = opt.state_dict()
    opt2 = SGD(model, lr=0.1, momentum=0.5)
    opt2.load_state_dict(state)
    np.testing.assert_allclose(opt2.velocity["out.bias"], -0.15)


def test_adam_update_rule():
    """With bias correction, a constant gradient g moves every parameter by lr * sign(g) at every
    step, from the first on (m_hat = g, v_hat = g^2); without it the first step is ~3.2 lr."""
    model = UNet(base_channels=1, depth=1, dtype="float64")
    p0 = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng(0)
    g = {k: rng.choice([-3.0, -0.02, 0.5, 7.0], v.shape) for k, v in model.grads().items()}
    opt = Adam(model, lr=0.01, betas=(0.9, 0.999), eps=1e-12)

    def step():
        for k, v in model.grads().items():
            v[...] = g[k]
        opt.step()

    step()
    for k, v in model.params.items():
        np.testing.assert_allclose(v, p0[k] - 0.01 * np.sign(g[k]), rtol=0, atol=1e-9)
    step()
    state = copy.deepcopy(opt.state_dict())      # its buffers are the live arrays
    params2 = {k: v.copy() for k, v in model.params.items()}
    step()
    for k, v in model.params.items():
        np.testing.assert_allclose(v, p0[k] - 0.03 * np.sign(g[k]), rtol=0, atol=1e-9)
    # an optimizer resumed from the state after step 2 takes the same third step
    after = {k: v.copy() for k, v in model.params.items()}
    model.load_state_dict(params2)
    opt = Adam(model, lr=0.5, eps=1e-12)
    opt.load_state_dict(state)
    step()
    for k, v in model.params.items():
        np.testing.assert_allclose(v, after[k], rtol=0, atol=1e-12)


def test_the_optimizers_defaults_are_the_published_ones():
    """SGD(model) is the paper's (lr 0.01, momentum 0.99), Adam(model) Kingma and Ba's (lr 1e-3,
    betas 0.9 and 0.999, eps 1e-8), neither with weight decay: three steps of changing
    gradients, some as small as eps, against the rules written out here."""
    rng = np.random.default_rng(3)
    grads = [rng.choice([-2.0, 1e-8, -3e-9, 0.7], (4,)) for _ in range(3)]

    def run(opt_cls):
        model = UNet(base_channels=1, depth=1, dtype="float64")
        model.params["out.bias"][...] = 5.0                  # weight decay would pull it in
        opt = opt_cls(model)
        for g in grads:
            for v in model.grads().values():
                v[...] = 0.0
            model.grads()["out.bias"][...] = g[:2]
            opt.step()
        return model.params["out.bias"]

    p, v = np.full(2, 5.0), np.zeros(2)
    for g in grads:
        v = 0.99 * v - 0.01 * g[:2]
        p = p + v
    np.testing.assert_allclose(run(SGD), p, rtol=0, atol=1e-15)
    p, m, v = np.full(2, 5.0), np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads, 1):
        m, v = 0.9 * m + 0.1 * g[:2], 0.999 * v + 0.001 * g[:2] ** 2
        p = p - 1e-3 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(run(Adam), p, rtol=0, atol=1e-15)


def test_the_optimizers_count_their_steps_and_save_their_settings():
    """The step count and the settings are the checkpoint's record of where a run is (weight
    decay's rule itself: tests/test_robust.py)."""
    for opt_cls in (SGD, Adam):
        model = UNet(base_channels=1, depth=1, dtype="float64")
        opt = opt_cls(model, lr=0.1, weight_decay=0.5)
        for _ in range(3):
            opt.step()
        state = opt.state_dict()
        assert (opt.steps, state["steps"], state["lr"], state["weight_decay"]) == (3, 3, 0.1, 0.5)


def test_the_optimizers_buffers_keep_their_checkpoint_names():
    """The names a checkpoint stores each optimizer's buffers under (a renamed buffer would make
    every earlier checkpoint unreadable): SGD's velocity, Adam's m and v, the average's
    decay, updates and average, one entry per parameter each."""
    from tinyunet.optim import EMA
    model = UNet(base_channels=1, depth=1, dtype="float64")
    names = list(model.params)
    assert {b: list(d) for b, d in SGD(model).state_dict()["buffers"].items()} == \
        {"velocity": names}
    assert {b: list(d) for b, d in Adam(model).state_dict()["buffers"].items()} == \
        {"m": names, "v": names}
    ema = EMA(model, 0.9).state_dict()
    assert (set(ema), ema["decay"], ema["updates"], list(ema["average"])) == \
        ({"decay", "updates", "average"}, 0.9, 0, names)


def test_the_averages_default_decay_is_0999():
    """EMA(model) averages with decay 0.999 (about the last 1000 steps): once the ramp
    (1 + t) / (10 + t) passes it (t = 9000: 0.999001), a <- 0.999 a + 0.001 p."""
    from tinyunet.optim import EMA
    model = UNet(base_channels=1, depth=1, dtype="float64")
    ema = EMA(model)
    for k in model.params:
        model.params[k][...], ema.average[k][...] = 1.0, 0.0
    ema.updates = 9000
    ema.update()
    for k, v in ema.average.items():
        np.testing.assert_allclose(v, 0.001, rtol=1e-12, atol=0, err_msg=k)
    assert ema.state_dict()["decay"] == 0.999


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_the_average_needs_a_decay_inside_zero_one(decay):
    from tinyunet.optim import EMA
    with pytest.raises(ValueError, match=rf"^EMA decay must be in \(0, 1\), got {decay}$"):
        EMA(UNet(base_channels=1, depth=1), decay)


def test_a_learning_rate_must_be_positive():
    for lr in (0.0, -1e-3):
        for opt_cls in (SGD, Adam):
            with pytest.raises(ValueError, match=rf"^learning rate must be > 0, got {lr}$"):
                opt_cls(UNet(base_channels=1, depth=1), lr=lr)
    SGD(UNet(base_channels=1, depth=1), lr=1e-12)


def test_gpu_request_without_gpu_is_a_clear_error(monkeypatch):
    if backend.gpu_available():
        pytest.skip("a GPU is present here")
    with pytest.raises(RuntimeError, match="device 'gpu' was requested"):
        UNet(base_channels=1, depth=1).to("gpu")
    monkeypatch.setenv("TINYUNET_DEVICE", "gpu")
    with pytest.raises(RuntimeError, match="device 'gpu' was requested"):
        backend.resolve_device()
    with pytest.raises(ValueError, match="valid devices are 'cpu' and 'gpu'"):
        backend.resolve_device("tpu")


@pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")
def test_model_on_gpu_matches_cpu():
    model, x, labels, weights = small_problem()
    cpu_logits = model.forward(x)
    model.to("gpu")
    gpu_logits = model.forward(backend.to_device(x, "gpu"))
    np.testing.assert_allclose(backend.to_numpy(gpu_logits), cpu_logits, rtol=1e-10)
    model.to("cpu")
    assert isinstance(model.params["out.weight"], np.ndarray)
