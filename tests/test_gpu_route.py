"""The GPU route without a GPU: the CuPy defects found by reading the code, and a stand-in for
CuPy (tests/fake_cupy.py) that records every host synchronisation. A full training step records
nothing and the losses are read back only at the logged steps; dropout draws never alias;
inference of a slice copies back one class map per tile and nothing else; a checkpoint saves and
resumes on the "GPU"; a GPU model pickles and moves back to the CPU."""
import json
import pickle

import numba
import numpy as np
import pytest

from tinyunet import UNet, backend, softmax_cross_entropy
from tinyunet.checkpoint import model_from_checkpoint
from tinyunet.config import TrainConfig
from tinyunet.infer import predict_tiled
from tinyunet.optim import EMA, Adam
from tinyunet.train import Trainer

from . import fake_cupy
from .conftest import small_data, small_trainer


@pytest.fixture
def gpu(monkeypatch):
    """The stand-in installed as the backend's CuPy: device "gpu" is the recording module.
    Every Numba kernel of tinyunet.kernels records a call that reaches it with device arrays."""
    fake = fake_cupy.make_module()
    monkeypatch.setattr(backend, "_cupy", fake)
    import tinyunet.kernels as kernels_pkg
    from tinyunet.kernels import conv_relu, elastic, pool, thinning, warping, weight_map
    for mod in (conv_relu, elastic, pool, thinning, warping, weight_map):
        kernels = {n: k for n, k in vars(mod).items()
                   if isinstance(k, numba.core.registry.CPUDispatcher)}
        # a kernel that another kernel calls stays as it is: Numba reads it from the module
        # when it compiles the caller, and a Python wrapper there would not compile
        called = {n for k in kernels.values() for n in k.py_func.__code__.co_names}
        for name, obj in kernels.items():
            if name not in called:
                monkeypatch.setattr(mod, name, _watched(obj, f"{mod.__name__}.{name}"))
    assert kernels_pkg
    fake_cupy.EVENTS.clear()
    yield fake
    fake_cupy.EVENTS.clear()


def _watched(kernel, name):
    def call(*args, **kwargs):
        if any(isinstance(a, fake_cupy.ndarray) for a in args):
            fake_cupy.EVENTS.append(("numba", name))
        return kernel(*args, **kwargs)
    return call


def test_the_stand_in_records_what_syncs():
    """Each kind of event the stand-in claims to catch, caught (so that 'nothing recorded'
    means something)."""
    fake = fake_cupy.make_module()
    x = fake.asarray(np.arange(6.0).reshape(2, 3))
    fake_cupy.EVENTS.clear()
    y = (x * 2 + 1).sum(axis=0)                 # device work: nothing
    assert fake_cupy.EVENTS == [] and isinstance(x.sum(), fake.ndarray) and x.sum().ndim == 0
    float(x.sum())
    f"{x.max()}"
    x[x > 2]
    fake.nonzero(x)
    np.exp(x)
    x + np.ones(3)
    fake.asnumpy(y)
    with pytest.raises(TypeError, match="pickle"):            # a lock inside, as in CuPy
        pickle.dumps(fake.random.default_rng(0))
    assert not isinstance(fake.random.default_rng(0).bit_generator.state, dict)
    assert [k for k, _ in fake_cupy.EVENTS] == ["scalar", "scalar", "mask", "size", "numpy",
                                                 "mix", "to_host"]


@pytest.fixture
def data():
    return small_data(size=64)


def gpu_trainer(tmp_path, data, **kw):
    cfg = dict(steps=8, val_every=100, log_every=100, optimizer="adam", dropout=0.5, ema=0.9,
               device="gpu")
    return small_trainer(tmp_path / "run", data, **{**cfg, **kw})


def test_a_training_step_never_waits_for_the_device(gpu, data, tmp_path, monkeypatch):
    t = gpu_trainer(tmp_path, data, log_every=4)
    assert t.model.device == "gpu" and t.model.engine.name == "readable"
    assert isinstance(t.model.params["out.weight"], gpu.ndarray)
    steps, losses = [], []
    step = t.train_step

    def watched_step():                  # forward, loss, backward, Adam, EMA, dropout, next tile
        fake_cupy.EVENTS.clear()
        loss = step()
        steps.append(list(fake_cupy.EVENTS))
        losses.append(loss)
        fake_cupy.EVENTS.clear()
        return loss

    monkeypatch.setattr(t, "train_step", watched_step)
    t.run()
    assert steps == [[]] * 8
    assert all(isinstance(loss, gpu.ndarray) and loss.ndim == 0 for loss in losses)
    # the losses are read back only when they are logged, every log_every steps
    logged = [r["loss"] for r in t.read_log() if "loss" in r]
    assert logged == [float(np.mean([float(v) for v in losses[:4]])),
                      float(np.mean([float(v) for v in losses[4:]]))]


def test_the_loss_is_read_back_only_every_log_every_steps(gpu, data, tmp_path, monkeypatch):
    """The GPU route reads the losses back to the host only at a logged step (every log_every
    steps and the last), never at the steps between."""
    n, k = 7, 3
    t = gpu_trainer(tmp_path, data, steps=n, log_every=k)
    reads = {}                        # step -> the host reads of that step (training and log)
    train_and_log = t._train_and_log

    def watched():
        fake_cupy.EVENTS.clear()
        train_and_log()
        reads[t.step] = [e for e in fake_cupy.EVENTS if e[0] in ("scalar", "to_host")]
        fake_cupy.EVENTS.clear()

    monkeypatch.setattr(t, "_train_and_log", watched)
    t.run()
    logged = [s for s in range(1, n + 1) if s % k == 0 or s == n]          # 3, 6, 7
    assert sorted(reads) == list(range(1, n + 1))
    assert [s for s in reads if reads[s]] == logged, reads
    assert all(e[0] == "scalar" for s in logged for e in reads[s])
    # no more reads than the losses of the window (one each, or fewer if read back together)
    assert all(len(reads[s]) <= s - p for s, p in zip(logged, [0] + logged[:-1]))
    assert [r["step"] for r in t.read_log() if "loss" in r] == logged


def test_inference_copies_one_class_map_per_tile_and_nothing_else(gpu):
    model = UNet(base_channels=2, depth=2, seed=0, device="gpu")
    image = np.random.default_rng(0).standard_normal((70, 90)).astype(np.float32)
    fake_cupy.EVENTS.clear()
    p = predict_tiled(model, image, tile=60)                  # 20 px out: 4 x 5 tiles
    assert fake_cupy.EVENTS == [("to_host", "cupy.asnumpy")] * 20
    fake_cupy.EVENTS.clear()
    p1 = predict_tiled(model, gpu.asarray(image), tile=60, channel=1)   # a CuPy image too
    assert [k for k, _ in fake_cupy.EVENTS] == ["to_host"] * 21
    np.testing.assert_array_equal(p1, p[1])
    cpu = UNet(base_channels=2, depth=2, seed=0)
    np.testing.assert_allclose(p, predict_tiled(cpu, image, tile=60), rtol=1e-5, atol=1e-6)


def test_save_on_the_gpu_and_resume_exactly(gpu, data, tmp_path):
    full = gpu_trainer(tmp_path / "a", data)
    full.run()

    def stop_at_5(trainer):
        if trainer.step == 5:
            raise KeyboardInterrupt

    part = gpu_trainer(tmp_path / "b", data)
    part.callback = stop_at_5
    with pytest.raises(KeyboardInterrupt):
        part.run()
    resumed = Trainer(part.cfg, *data, tmp_path / "b" / "run", resume=True, progress=False)
    assert resumed.model.device == "gpu" and resumed.step == 5
    resumed.run()
    for k, v in full.model.params.items():
        np.testing.assert_array_equal(backend.to_numpy(resumed.model.params[k]),
                                      backend.to_numpy(v))
        np.testing.assert_array_equal(backend.to_numpy(resumed.ema.average[k]),
                                      backend.to_numpy(full.ema.average[k]))
    model, meta = model_from_checkpoint(tmp_path / "a" / "run" / "latest.npz", "gpu")
    assert model.device == "gpu" and meta["dropout_rng"] == full.model.rng.state


def test_a_gpu_model_moves_back_pickles_and_keeps_its_dropout_draws(gpu):
    """Defects 1, 2, 4: to("cpu") after to("gpu") crashed on CuPy's generator state; a GPU
    model could not be pickled; dropout on the GPU drew other masks than on the CPU and
    restarted at every to("gpu"). (The readable ops on both devices, so that the logits differ
    by nothing but the dropout masks: the CPU kernels sum in another order.)"""
    model = UNet(base_channels=2, depth=2, seed=0, dropout=0.5, engine="readable")
    x = np.random.default_rng(0).standard_normal((1, 1, 60, 60)).astype(np.float32)
    cpu_logits = model.forward(x, train=True)               # draw 0 on the CPU
    model.rng.state = {"seed": 1, "draws": 0}
    model.to("gpu")
    gpu_logits = model.forward(gpu.asarray(x), train=True)  # the same draw on the GPU
    np.testing.assert_allclose(backend.to_numpy(gpu_logits), cpu_logits, rtol=1e-5, atol=1e-6)
    assert model.rng.state == {"seed": 1, "draws": 1}
    model.to("gpu")                                          # no reseeding on a second call
    assert model.rng.state["draws"] == 1
    copy = pickle.loads(pickle.dumps(model))                 # dask ships models like this
    assert copy.device == "gpu" and copy.workspace is not model.workspace
    assert copy.rng.state == model.rng.state
    model.to("cpu")
    assert model.device == "cpu" and isinstance(model.params["out.weight"], np.ndarray)
    assert type(model.params["out.weight"]) is np.ndarray


def _stream(seed, draws, n=8, xp=np):
    rng = backend.CounterRNG()
    rng.state = {"seed": seed, "draws": draws}
    return tuple(backend.to_numpy(rng.random((n,), xp=xp)).tolist())


def test_dropout_seeds_and_draws_never_alias(gpu):
    """Each (seed, draw) of the dropout generator is its own stream: (s, k + 1) is not
    (s + 1, k), nor any other pair of a grid of seeds and draws, on the CPU and the GPU."""
    from tinyunet.ops import dropout
    grid = [(s, k) for s in range(5) for k in range(5)]
    streams = {sk: _stream(*sk) for sk in grid}
    assert len(set(streams.values())) == len(grid)
    for s in range(4):
        for k in range(4):
            assert _stream(s, k + 1) != _stream(s + 1, k)
            assert _stream(s, k + 1, xp=gpu) == streams[s, k + 1]       # the same on the GPU
    # and so the masks dropout draws: the model's generator at (s, k + 1) and at (s + 1, k)
    x = np.ones((1, 4, 8, 8), np.float32)
    masks = []
    for state in ({"seed": 1, "draws": 1}, {"seed": 2, "draws": 0}):
        rng = backend.CounterRNG()
        rng.state = state
        masks.append(dropout.forward(x, 0.5, rng)[1])
    assert not np.array_equal(*masks)


def test_optimizer_and_average_follow_the_model_to_the_gpu(gpu):
    """Defect 3: buffers made before model.to() stayed on the old device."""
    model = UNet(base_channels=2, depth=2, seed=0)
    opt, ema = Adam(model, 0.01), EMA(model, 0.9)
    model.to("gpu")
    x = gpu.asarray(np.zeros((1, 1, 60, 60), np.float32))
    logits = model.forward(x)
    _, d = softmax_cross_entropy(logits, gpu.asarray(np.zeros((1, 20, 20), np.uint8)))
    model.backward(d, input_grad=False)
    opt.step()
    ema.update()
    assert isinstance(opt.m["out.bias"], gpu.ndarray) and isinstance(ema.average["out.bias"],
                                                                     gpu.ndarray)


def _buffers(owner):
    return list(owner._buffers().values()) if hasattr(owner, "_buffers") else [owner.average]


@pytest.mark.parametrize("kind", ["sgd", "adam", "ema"])
def test_buffers_follow_the_model_both_ways_with_the_same_numbers(gpu, kind):
    """An optimizer's (or the average's) buffers follow its model to the GPU and back at its
    next step, with the numbers of a twin that never moved (weight decay on, so every argument
    counts); a state loaded into one made on the CPU of a model now on the GPU arrives on the
    GPU at once, with no host array mixed in."""
    from tinyunet.optim import SGD
    make = dict(sgd=lambda m: SGD(m, lr=0.1, momentum=0.5, weight_decay=0.05),
                adam=lambda m: Adam(m, lr=0.01, weight_decay=0.05),
                ema=lambda m: EMA(m, 0.5))[kind]
    still, moved = UNet(base_channels=2, depth=1, seed=0), UNet(base_channels=2, depth=1, seed=0)
    a, b = make(still), make(moved)
    rng = np.random.default_rng(0)

    def step(model, owner, g):
        for k, v in (model.params if kind == "ema" else model.grads()).items():
            v[...] = v + backend.to_device(g[k], model.device) if kind == "ema" else \
                backend.to_device(g[k], model.device)
        owner.update() if kind == "ema" else owner.step()

    for device in ["cpu", "gpu", "gpu", "cpu"]:
        moved.to(device)
        g = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in still.params.items()}
        step(still, a, g)
        step(moved, b, g)
        array = gpu.ndarray if device == "gpu" else np.ndarray
        for d in _buffers(b):
            assert all(isinstance(v, array) for v in d.values())
            if device == "cpu":
                assert not any(isinstance(v, gpu.ndarray) for v in d.values())
        for k in still.params:
            np.testing.assert_allclose(backend.to_numpy(moved.params[k]), still.params[k],
                                       rtol=1e-6, atol=1e-7)
        for da, db in zip(_buffers(a), _buffers(b)):
            for k in da:
                np.testing.assert_allclose(backend.to_numpy(db[k]), da[k], rtol=1e-6,
                                           atol=1e-7)
    state = b.state_dict()
    fresh = UNet(base_channels=2, depth=1, seed=1)
    c = make(fresh)
    fresh.to("gpu")
    fake_cupy.EVENTS.clear()
    c.load_state_dict(state)
    assert not [e for e in fake_cupy.EVENTS if e[0] in ("mix", "numpy")]
    for dc, db in zip(_buffers(c), _buffers(b)):
        for k in dc:
            assert isinstance(dc[k], gpu.ndarray)
            np.testing.assert_array_equal(backend.to_numpy(dc[k]), backend.to_numpy(db[k]))


def test_the_default_device_is_tinyunet_device(gpu, monkeypatch, tmp_path, data):
    """Defect 6: UNet, TrainConfig and model_from_checkpoint hard-coded the CPU."""
    monkeypatch.setenv("TINYUNET_DEVICE", "gpu")
    assert UNet(base_channels=2, depth=1).device == "gpu"
    cfg = TrainConfig(base_channels=2, depth=2, tile=92, steps=1, val_every=1)
    t = Trainer(cfg, *data, tmp_path / "run", progress=False)
    assert t.model.device == "gpu"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "gpu"
    assert model_from_checkpoint(tmp_path / "run" / "latest.npz")[0].device == "gpu"
    monkeypatch.delenv("TINYUNET_DEVICE")
    assert model_from_checkpoint(tmp_path / "run" / "latest.npz")[0].device == "cpu"


def test_a_gpu_run_resumes_on_the_gpu_unless_told_otherwise(gpu, tmp_path, capsys, monkeypatch):
    """Defect 5: a GPU run resumed without --device continued quietly on the CPU."""
    from tinyunet import config
    from tinyunet.commands.train import main
    monkeypatch.delenv("TINYUNET_DEVICE", raising=False)
    monkeypatch.setitem(config.PRESETS, "tiny", dict(base_channels=2, depth=2, tile=92,
                                                    warmup=1, log_every=2))
    base = ["--preset", "tiny", "--val-every", "2", "--out", str(tmp_path / "runs")]
    main(["--device", "gpu", "--steps", "2"] + base)
    run = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    main(["--resume", str(run), "--steps", "4"])
    out = capsys.readouterr()
    assert ", gpu\n" in out.out and "note:" not in out.err
    monkeypatch.setattr(backend, "_cupy", None)             # the same run on a machine without
    from tinyunet.errors import UserError
    with pytest.raises(UserError, match="this run trained on the gpu, and device 'gpu' was "
                                        "requested but CuPy is not installed .*; give --device "
                                        "cpu to continue it on the CPU"):
        main(["--resume", str(run), "--steps", "6"])
    main(["--resume", str(run), "--steps", "6", "--device", "cpu"])
    out = capsys.readouterr()
    assert ", cpu\n" in out.out
    assert "note: the run trained on the gpu and continues on the cpu" in out.err
    # from now on it is a CPU run: config.json says so, and the next resume needs no --device
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    main(["--resume", str(run), "--steps", "8"])
    assert "note:" not in capsys.readouterr().err
