"""The predict command (examples/predict.py) as a user meets it: one `error:` line (exit 2)
for each mistake, checked before anything is written; no silent overwrite; a warning for
synthetic-data checkpoints; the largest tile that fits the memory budget by default; zarr
volumes block by block."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tinyunet import backend
from tinyunet.commands import predict
from tinyunet.commands.cli import run_cli
from tinyunet.data import normalise
from tinyunet.errors import UserError
from tinyunet.infer import choose_tile, covering_tile, forward_memory, predict_tiled

from . import conftest
from .conftest import run_example, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.5, 0.2


def make_checkpoint(folder, data=None):
    """A tiny checkpoint (random weights) in a run folder; `data` recorded as train_isbi does."""
    config = dict(tile=60) if data is None else dict(tile=60, data=data)
    return write_checkpoint(folder / "best.npz", mean=MEAN, std=STD, best=1.0, data_rng=None,
                            train_config=config)


@pytest.fixture
def run(tmp_path):
    ckpt, model = make_checkpoint(tmp_path / "run")
    image = np.random.default_rng(0).integers(0, 256, (2, 40, 52), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", image)
    return ckpt, model, image, tmp_path


def cli(argv, capsys):
    """(exit status, stdout, stderr) of predict.py run as from the shell."""
    return run_example(predict.main, argv, capsys)


def error_line(argv, capsys):
    return conftest.error_line(predict.main, argv, capsys)


def test_bad_inputs_get_one_line_and_nothing_is_written(run, capsys):
    ckpt, _, _, tmp = run
    (tmp / "notes.tif").write_text("not a TIFF")
    (tmp / "notes.png").write_text("not a PNG")
    (tmp / "folder").mkdir()
    np.savez(tmp / "random.npz", a=np.arange(3))
    (tmp / "pickled.npz").write_bytes(b"\x80\x04K\x01.")          # a pickle, not a zip
    stack, out = tmp / "stack.tif", tmp / "out"
    cases = {
        (ckpt, tmp / "missing.tif"): "no such image: ",
        (ckpt, tmp / "notes.tif"): "notes.tif is not an image tinyunet can read (PNG, JPEG or TIFF)",
        (ckpt, tmp / "notes.png"): "notes.png is not an image tinyunet can read",
        (ckpt, tmp / "folder"): "folder is a folder with no images in it: give an image (PNG, "
                                "TIFF), a TIFF stack, a folder of frames or a zarr store",
        (tmp / "random.npz", stack): "random.npz is not a tinyunet checkpoint",
        (tmp / "pickled.npz", stack): "pickled.npz is corrupt or not a tinyunet checkpoint",
        (tmp / "nothing.npz", stack): "no checkpoint at ",
        (tmp / "run", stack): "run is a folder, not a checkpoint",
        (ckpt, stack, "--batch", "0"): "argument --batch: must be at least 1",
        (ckpt, stack, "--tile", "61"): "--tile 61 does not fit a depth-2 U-Net with valid "
                                       "convolutions: the nearest valid sizes are 60 or 64",
        (ckpt, stack, "--memory", "lots"): "argument --memory: must be a positive size such "
                                           "as 512M",
        (ckpt, stack, "--memory", "1K"): "too small for this network: its smallest tile",
        (ckpt, stack, "--chunk", "1,x"): "argument --chunk: must be Z,Y,X voxels per block",
    }
    if not backend.gpu_available():
        cases[(ckpt, stack, "--device", "gpu")] = "device 'gpu' was requested but CuPy"
    for argv, message in cases.items():
        line = error_line([*argv, "--out", out], capsys)
        assert message in line, line
        assert "allow_pickle" not in line
    assert not out.exists()


def test_debug_shows_the_traceback(run):
    ckpt, _, _, tmp = run
    with pytest.raises(UserError, match="argument --batch: must be at least 1"):
        run_cli(predict.main, [str(ckpt), str(tmp / "stack.tif"), "--batch", "0", "--debug"])


def test_writes_beside_the_checkpoint_and_refuses_to_overwrite(run, capsys):
    ckpt, model, image, tmp = run
    code, out, err = cli([ckpt, tmp / "stack.tif", "--tile", "60"], capsys)
    assert code == 0 and "warning" not in err
    prob = tifffile.imread(tmp / "run" / "predictions" / "stack_prob.tif")
    ref = [predict_tiled(model, s, tile=60)[1] for s in normalise(image, MEAN, STD)]
    np.testing.assert_allclose(prob, ref, atol=1e-6)
    assert (tmp / "run" / "predictions" / "stack_overlay.png").exists()
    line = error_line([ckpt, tmp / "stack.tif"], capsys)
    assert "stack_prob.tif" in line and "exists" in line and "--overwrite" in line
    code, _, _ = cli([ckpt, tmp / "stack.tif", "--overwrite"], capsys)
    assert code == 0


def test_default_output_folder_is_ignored_by_git():
    """runs/<run>/predictions (the default beside a run's checkpoint) and the old default."""
    paths = ["runs/r/predictions/x_prob.tif", "predictions/x_prob.tif"]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == paths


@pytest.mark.parametrize("data,warned", [
    ({"source": "synthetic", "seed": 0}, True),
    ("/data/isbi2012", False),
    ({"source": "/data/synthetic-looking-name", "seed": None}, False),   # a folder
    (None, False),                                # older runs: the source is unknown
])
def test_warns_when_the_checkpoint_was_trained_on_synthetic_data(tmp_path, capsys, data, warned):
    ckpt, _ = make_checkpoint(tmp_path / "run", data)
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((1, 30, 30), np.uint8))
    code, _, err = cli([ckpt, tmp_path / "x.tif", "--tile", "60"], capsys)
    assert code == 0 and ("warning:" in err and "synthetic" in err) == warned, err


def test_warning_also_read_from_the_runs_config_json(tmp_path, capsys):
    ckpt, _ = make_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"data": {"source": "synthetic"}}))
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((1, 30, 30), np.uint8))
    _, _, err = cli([ckpt, tmp_path / "x.tif", "--tile", "60"], capsys)
    assert "warning:" in err and "synthetic" in err


def test_default_tile_is_the_largest_that_fits_the_memory_budget(run, capsys):
    ckpt, model, _, tmp = run
    budget = forward_memory(model.config, 84)        # 84 fits, 88 does not
    code, out, _ = cli([ckpt, tmp / "stack.tif", "--memory", budget, "--out", tmp / "a"], capsys)
    assert code == 0 and "tile 84," in out
    assert choose_tile(model, budget) == 84
    # with room to spare: the smallest tile that covers the 40 x 52 image in one pass
    code, out, _ = cli([ckpt, tmp / "stack.tif", "--out", tmp / "b"], capsys)
    assert f"tile {covering_tile(52, 2)}," in out


def test_zarr_volume_block_by_block(run, capsys):
    zarr = pytest.importorskip("zarr")
    ckpt, model, image, tmp = run
    z = zarr.open(str(tmp / "vol.zarr"), mode="w", shape=image.shape, chunks=(1, 20, 20),
                  dtype="uint8")
    z[:] = image
    code, out, err = cli([ckpt, tmp / "vol.zarr", "--tile", "60", "--chunk", "1,24,26"],
                         capsys)
    assert code == 0, err
    prob = zarr.open(str(tmp / "run" / "predictions" / "vol_prob.zarr"), mode="r")[:]
    ref = [predict_tiled(model, s, tile=60)[1] for s in normalise(image, MEAN, STD)]
    np.testing.assert_allclose(prob, ref, atol=1e-5)
    line = error_line([ckpt, tmp / "vol.zarr"], capsys)
    assert "vol_prob.zarr exists" in line
    line = error_line([ckpt, tmp / "vol.zarr", "--chunk", "10", "--tile", "60", "--out",
                       tmp / "c"], capsys)
    assert "chunk of 10 px in y is smaller than the halo of 23 px" in line
    assert not (tmp / "c").exists()


def test_zarr_without_dask_says_how_to_install(run, capsys, monkeypatch):
    ckpt, _, image, tmp = run
    (tmp / "v.zarr").mkdir()
    (tmp / "v.zarr" / "zarr.json").write_text("{}")
    monkeypatch.setitem(__import__("sys").modules, "dask", None)
    monkeypatch.setitem(__import__("sys").modules, "dask.array", None)
    line = error_line([ckpt, tmp / "v.zarr"], capsys)
    assert "pip install 'tinyunet[volume]'" in line


def test_tiff_to_zarr_block_by_block(run, capsys):
    pytest.importorskip("zarr")
    import zarr
    ckpt, model, image, tmp = run
    code, out, err = cli([ckpt, tmp / "stack.tif", "--format", "zarr", "--tile", "60"], capsys)
    assert code == 0, err
    prob = zarr.open(str(tmp / "run" / "predictions" / "stack_prob.zarr"), mode="r")[:]
    ref = [predict_tiled(model, s, tile=60)[1] for s in normalise(image, MEAN, STD)]
    np.testing.assert_allclose(prob, ref, atol=1e-5)


def test_unreachable_scheduler_is_one_line(run, capsys):
    pytest.importorskip("distributed")
    ckpt, _, _, tmp = run
    line = error_line([ckpt, tmp / "stack.tif", "--scheduler", "tcp://127.0.0.1:9", "--out",
                       tmp / "d"], capsys)
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in line
    assert not (tmp / "d").exists()


@pytest.mark.parametrize("run_config, flag, sizes", [
    (dict(min_cell=10), [], [16, 36]),        # the run's min_cell 10: the 3x3 speck dropped
    (dict(min_cell=20), [], [36]),            # 20: the 4x4 cell too
    (dict(), [], [9, 16, 36]),                # no min_cell recorded: every cell kept
    (dict(min_cell=20), ["--min-cell", "0"], [9, 16, 36]),    # the flag wins
    (dict(threshold=0.7), [], [9, 36]),       # the run's threshold 0.7: the 0.6 cell is not one
    (dict(), [], [9, 16, 36]),                # no threshold recorded: 0.5, as such runs used
    (dict(threshold=0.7), ["--threshold", "0.55"], [9, 16, 36]),   # the flag wins
    (dict(threshold=0.3), [], [9, 16, 36, 50]),                    # 0.3: the faint 0.4 one too
])
def test_instances_drop_the_cells_smaller_than_the_runs_min_cell(tmp_path, capsys, monkeypatch,
                                                                 run_config, flag, sizes):
    """predict --instances drops the cells smaller than the run's min_cell and keeps the pixels
    above the run's threshold, as validation does (label_cells with the run's settings), unless
    --min-cell or --threshold says otherwise."""
    ckpt, _ = write_checkpoint(tmp_path / "run" / "best.npz", mean=MEAN, std=STD,
                               train_config=dict(tile=60, labels="instances", border=1,
                                                 **run_config))
    prob = np.zeros((30, 40), np.float32)
    prob[2:5, 2:5] = prob[20:26, 30:36] = 0.9                         # cells of 9 and 36 px,
    prob[10:14, 10:14] = 0.6                                          # 16 px less sure,
    prob[20:25, 2:12] = 0.4                                           # 50 px, faint
    monkeypatch.setattr(predict, "predict_tiled", lambda model, img, **kw: prob)
    tifffile.imwrite(tmp_path / "frame.tif", np.zeros((30, 40), np.uint8))
    code, _, err = cli([ckpt, tmp_path / "frame.tif", "--instances", "--out", tmp_path / "out",
                        *flag], capsys)
    assert code == 0, err
    cells = tifffile.imread(tmp_path / "out" / "frame_labels.tif")
    assert sorted(np.bincount(cells.ravel())[1:].tolist()) == sizes
