"""Checkpoints on disk: a write that fails or is killed halfway, at any layer, leaves the previous
file whole; a checkpoint of another format number is refused with one line naming both."""
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import numpy.lib.format
import pytest

import tinyunet.files
from tinyunet.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, load_checkpoint,
                                 save_checkpoint)
from tinyunet.optim import SGD

from .conftest import ROOT, error_line, small_model, write_checkpoint


# ---- atomic writes ---------------------------------------------------------------------------
def _fail_in_savez(monkeypatch, exc):
    """numpy's savez dies inside its archive: two arrays written, then `exc`."""
    real, calls = numpy.lib.format.write_array, []

    def write_array(fid, array, **kw):
        calls.append(1)
        if len(calls) > 2:
            raise exc
        real(fid, array, **kw)
    monkeypatch.setattr(numpy.lib.format, "write_array", write_array)


class _FullDisk:
    """A file of atomic_write's that takes 3000 bytes, then fails like a full disk."""

    def __init__(self, f):
        self._f, self._left = f, 3000

    def write(self, data):
        if len(data) > self._left:
            self._f.write(bytes(data)[:self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _raise(exc):
    def fail(*args, **kw):
        raise exc
    return fail


def _inject(layer, monkeypatch):
    if layer == "savez":
        _fail_in_savez(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    elif layer == "ctrl-c in savez":
        _fail_in_savez(monkeypatch, KeyboardInterrupt())
    elif layer == "file write":
        real_open = open
        monkeypatch.setattr(tinyunet.files, "open", lambda *a, **kw: _FullDisk(real_open(*a, **kw)),
                            raising=False)
    elif layer == "fsync":
        monkeypatch.setattr(os, "fsync", _raise(OSError(errno.EIO, "Input/output error")))
    elif layer == "os.replace":
        monkeypatch.setattr(os, "replace", _raise(OSError(errno.EIO, "Input/output error")))


def _assert_whole(path, before, old, step):
    """`path` is the previous checkpoint, byte for byte, and loads as it was."""
    assert path.read_bytes() == before
    meta, params, bufs = load_checkpoint(path)
    assert meta["step"] == step and bufs["velocity"].keys() == params.keys()
    for k, v in old.params.items():
        np.testing.assert_array_equal(params[k], v)


@pytest.mark.parametrize("layer", ["savez", "ctrl-c in savez", "file write", "fsync",
                                   "os.replace"])
def test_a_failed_checkpoint_write_leaves_the_previous_file_whole(layer, tmp_path, monkeypatch):
    """A write failing at any layer leaves the previous checkpoint whole and no temporary file."""
    path, old = write_checkpoint(tmp_path / "latest.npz", small_model(seed=0), step=1)
    before = path.read_bytes()
    new = small_model(seed=1)
    _inject(layer, monkeypatch)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(path, new, SGD(new, 0.01), 2, dict(mean=0.5, std=0.2))
    monkeypatch.undo()
    _assert_whole(path, before, old, step=1)
    assert [p.name for p in tmp_path.iterdir()] == ["latest.npz"]


KILLED = """
import os, signal, sys
import numpy.lib.format
from tinyunet.checkpoint import save_checkpoint
from tinyunet.model import UNet
from tinyunet.optim import SGD
real, calls = numpy.lib.format.write_array, []
def write_array(fid, array, **kw):      # killed (no clean-up runs) with half the arrays written
    calls.append(1)
    if len(calls) > 3:
        os.kill(os.getpid(), signal.SIGKILL)
    real(fid, array, **kw)
numpy.lib.format.write_array = write_array
model = UNet(base_channels=2, depth=2, seed=1)
save_checkpoint(sys.argv[1], model, SGD(model, 0.01), 2, dict(mean=0.5, std=0.2))
"""


def test_a_checkpoint_write_killed_halfway_leaves_the_previous_file_whole(tmp_path):
    """A write killed (SIGKILL) halfway leaves the previous checkpoint whole and loadable."""
    path, old = write_checkpoint(tmp_path / "latest.npz", small_model(seed=0), step=1)
    before = path.read_bytes()
    p = subprocess.run([sys.executable, "-c", KILLED, str(path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert any(q.name != "latest.npz" for q in tmp_path.iterdir())   # it was killed mid-write
    _assert_whole(path, before, old, step=1)
    new = small_model(seed=1)
    save_checkpoint(path, new, SGD(new, 0.01), 2, dict(mean=0.5, std=0.2))
    assert load_checkpoint(path)[0]["step"] == 2


# ---- the format number -----------------------------------------------------------------------
def _with_format(path, fmt):
    """Rewrite the checkpoint at `path` with format number `fmt` in its header."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format"] = fmt
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("found", [CHECKPOINT_FORMAT + 1, CHECKPOINT_FORMAT - 1])
def test_a_checkpoint_of_another_format_is_refused_in_one_line(found, tmp_path, capsys):
    """Another format number is refused in one line naming the format found and the expected."""
    import tifffile

    from tinyunet.commands import predict
    path = _with_format(write_checkpoint(tmp_path / "old.npz")[0], found)
    expected = rf"of format {CHECKPOINT_FORMAT} \(found format {found}\)"
    with pytest.raises(CheckpointError, match=expected) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    tifffile.imwrite(tmp_path / "em.tif", np.zeros((40, 40), np.uint8))
    err = error_line(predict.main, [path, tmp_path / "em.tif", "--out", tmp_path / "out"], capsys)
    assert f"of format {CHECKPOINT_FORMAT} (found format {found})" in err
    assert not (tmp_path / "out").exists()
    # the same file with this version's number loads
    assert load_checkpoint(_with_format(path, CHECKPOINT_FORMAT))[0]["format"] == CHECKPOINT_FORMAT
