"""Blockwise overlap-tile inference over volumes (tinyunet/volume.py): predict_tiled's numbers,
slice by slice, for any chunking, with TTA, on dask's threads and on a two-process cluster."""
import pickle
import sys
import tracemalloc

import numpy as np
import pytest

from tinyunet import UNet
from tinyunet.data import normalise
from tinyunet.infer import choose_tile, covering_tile, forward_memory, predict_tiled
from tinyunet.volume import predict_volume, save_volume

from .test_infer import make_model

da = pytest.importorskip("dask.array", reason="the 'volume' extra: pip install 'tinyunet[volume]'")
zarr = pytest.importorskip("zarr")


def _model(depth, dtype="float64", base=4):
    return make_model(depth, base, dtype)


@pytest.fixture(scope="module")
def model2():
    return _model(2)


def _tiled(model, volume, tile, tta):
    return np.stack([predict_tiled(model, s, tile=tile, tta=tta)[1] for s in volume])


# (depth, tile, chunks): chunks that divide the image (or span it) and chunks that do not, also
# chunks that are not multiples of 2^depth, where the tiles inside a block must find the grid
@pytest.mark.parametrize("depth,tile,shape,chunks", [
    (2, 60, (2, 71, 53), (1, 24, 24)),    # neither divides; the last x chunk (5) is merged
    (2, 60, (2, 71, 53), (2, 71, 53)),    # one block spans the slice
    (2, 92, (2, 71, 53), (1, 25, 27)),    # not multiples of 2^depth = 4
    (2, 60, (1, 64, 48), (1, 32, 24)),    # chunks divide the image
    (3, 116, (1, 107, 41), (1, 53, 41)),  # depth 3: a = 8, halo 44 + 7; 53 is not a multiple of 8
])
@pytest.mark.parametrize("tta", [False, True])
def test_volume_equals_predict_tiled_float64(depth, tile, shape, chunks, tta):
    model = _model(depth)
    volume = np.random.default_rng(0).standard_normal(shape)
    got = predict_volume(model, volume, tile=tile, chunks=chunks, tta=tta, dtype="float64")
    assert got.shape == volume.shape and got.dtype == np.float64
    np.testing.assert_allclose(got.compute(), _tiled(model, volume, tile, tta), rtol=0, atol=1e-12)


def test_volume_smaller_than_a_tile_equals_predict_tiled(model2):
    """An image smaller than the halo: one block, mirrored more than once, as predict_tiled."""
    volume = np.random.default_rng(2).standard_normal((1, 9, 14))
    got = predict_volume(model2, volume, tile=60, tta=True, dtype="float64").compute()
    np.testing.assert_allclose(got, _tiled(model2, volume, 60, True), rtol=0, atol=1e-12)


def test_volume_float32_uint8_and_normalisation_from_zarr(tmp_path):
    """A uint8 zarr volume normalised per block with the checkpoint's mean/std, as predict.py
    does in memory; float32 to 1e-5, and uint8 = round(255 p)."""
    model = _model(2, "float32")
    raw = np.random.default_rng(3).integers(0, 256, (3, 50, 61), dtype=np.uint8)
    z = zarr.open(str(tmp_path / "in.zarr"), mode="w", shape=raw.shape, chunks=(1, 32, 32),
                  dtype="uint8")
    z[:] = raw
    ref = _tiled(model, normalise(raw, 0.45, 0.2), 60, False)
    got = predict_volume(model, z, tile=60, chunks=(1, 30, 30), mean=0.45, std=0.2)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.compute(), ref, rtol=0, atol=1e-5)
    q = predict_volume(model, da.from_zarr(z), tile=60, chunks=(2, 30, 40), mean=0.45, std=0.2,
                       dtype="uint8").compute()
    assert q.dtype == np.uint8 and np.abs(q.astype(float) - ref * 255).max() <= 0.5 + 1e-3


def test_save_volume_writes_zarr_and_refuses_to_overwrite(model2, tmp_path):
    volume = np.random.default_rng(4).standard_normal((2, 40, 40))
    prob = predict_volume(model2, volume, tile=60, chunks=(1, 24, 40))
    out = tmp_path / "sub" / "prob.zarr"
    save_volume(prob, out, progress=False)
    np.testing.assert_array_equal(zarr.open(str(out), mode="r")[:], prob.compute())
    with pytest.raises(ValueError, match="prob.zarr exists.*overwrite"):
        save_volume(prob, out, progress=False)
    save_volume(prob * 0, out, overwrite=True, progress=False)
    assert zarr.open(str(out), mode="r")[:].max() == 0
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a writable folder"):
        save_volume(prob, tmp_path / "file" / "prob.zarr", progress=False)


def test_bad_volumes_and_chunks_say_what_is_valid(model2):
    with pytest.raises(ValueError, match=r"3-D \(Z, Y, X\), got 2-D of shape \(30, 30\).*image\[None\]"):
        predict_volume(model2, np.zeros((30, 30)), tile=60)
    # halo of a tile of 60 at depth 2: margin 20 + 3
    with pytest.raises(ValueError, match="chunk of 16 px in y is smaller than the halo of 23 px"):
        predict_volume(model2, np.zeros((1, 100, 100)), tile=60, chunks=(1, 16, 50))
    with pytest.raises(ValueError, match="tile size 61 .* 60 or 64"):
        predict_volume(model2, np.zeros((1, 100, 100)), tile=61)
    with pytest.raises(ValueError, match="both mean and std"):
        predict_volume(model2, np.zeros((1, 100, 100)), tile=60, mean=0.5)


def test_model_is_one_node_of_the_graph_not_copied_per_block():
    """The serialised task graph holds the model once: 4 or 36 blocks, the same size give or
    take the small per-block tasks, and less than two models."""
    model = _model(2, base=16)                     # ~100k parameters, ~0.8 MB pickled
    model_bytes = len(pickle.dumps(model))
    sizes = []
    for n in (2, 6):                               # 2 x 2 and 6 x 6 blocks per slice
        prob = predict_volume(model, da.zeros((1, 24 * n, 24 * n), chunks=(1, 24, 24)),
                              tile=60, chunks=(1, 24, 24))
        assert prob.numblocks == (1, n, n)
        sizes.append(len(pickle.dumps(dict(prob.__dask_graph__()))))
    assert model_bytes < sizes[0] < sizes[1] < 1.5 * model_bytes


def test_distributed_cluster_with_two_worker_processes_gives_the_same_numbers(model2, tmp_path):
    distributed = pytest.importorskip("distributed")
    volume = np.random.default_rng(5).standard_normal((2, 50, 50))
    ref = _tiled(model2, volume, 60, False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        prob = predict_volume(model2, volume, tile=60, chunks=(1, 25, 25), dtype="float64")
        with distributed.get_task_stream(client) as stream:
            out = save_volume(prob, tmp_path / "prob.zarr", progress=False)   # on the cluster
        workers = set(client.scheduler_info()["workers"])
    # the blocks (fused with their zarr writes) ran on the workers: 2 slices x 2 x 2 blocks;
    # the model's node once, on one worker (the other fetches it from there, once)
    blocks = [t for t in stream.data if str(t["key"]).startswith("('store-map")]
    model_nodes = [t for t in stream.data if str(t["key"]).startswith("unet-")]
    assert len(workers) == 2 and len(blocks) == 8 and len(model_nodes) == 1
    assert {t["worker"] for t in blocks} <= workers
    np.testing.assert_allclose(zarr.open(str(out), mode="r")[:], ref, rtol=0, atol=1e-12)


def _peak(model, tile, batch=2):
    x = np.zeros((batch, 1, tile, tile), model.dtype)
    model.predict_proba(x[:, :, :92, :92])             # compiled, scratch allocated
    tracemalloc.start()
    model.predict_proba(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_forward_memory_bounds_the_measured_peak(kernels, monkeypatch):
    """The estimate that chooses tiles is above the measured peak of an inference pass
    (tracemalloc) on the CPU kernels and on the im2col engine (TINYUNET_KERNELS=0), which it
    models: there it is within 1.5x."""
    monkeypatch.setenv("TINYUNET_KERNELS", kernels)
    model = UNet(base_channels=4, depth=3, seed=0)
    for tile in (116, 236):
        peak, est = _peak(model, tile), forward_memory(model.config, tile, batch=2)
        assert peak <= est, (tile, peak, est)
        if kernels == "0":
            assert est <= 1.5 * peak, (tile, peak, est)


def test_choose_tile_is_the_largest_that_fits():
    model = UNet(base_channels=8, depth=3, seed=0)
    budget = forward_memory(model.config, 252) + 1
    assert choose_tile(model, budget) == 252                   # 260 needs more
    assert forward_memory(model.config, 260) > budget
    cover = covering_tile(100, 3)                              # no larger than the image needs
    assert choose_tile(model, 2**40, max_size=cover) == cover
    with pytest.raises(ValueError, match="too small for this network: its smallest tile"):
        choose_tile(model, 1000)


def test_default_tile_and_chunks_come_from_the_memory_budget(model2):
    volume = np.random.default_rng(6).standard_normal((1, 120, 90))
    prob = predict_volume(model2, volume, memory=forward_memory(model2.config, 92) + 1,
                          dtype="float64")
    # tile 92 (output 52): chunks of 52 - 3 rounded down to a multiple of 4 = 48
    assert prob.chunks == ((1,), (48, 48, 24), (48, 42))   # 24 >= the halo (23): kept
    np.testing.assert_allclose(prob.compute(), _tiled(model2, volume, 92, False), atol=1e-12)


def test_without_dask_the_error_says_how_to_install(model2, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"pip install 'tinyunet\[volume\]'"):
        predict_volume(model2, np.zeros((1, 30, 30)))
