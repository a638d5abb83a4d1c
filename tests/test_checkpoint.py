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
from tinyunet.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, checkpoint_meta,
                                 load_checkpoint, load_model, model_from_checkpoint,
                                 save_checkpoint, trained_on)
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


# ---- what is wrong with a file that is not a usable checkpoint -------------------------------
def _header(**meta):
    return np.array(json.dumps(dict(format=CHECKPOINT_FORMAT, model={}, **meta)))


def _not_a_zip(path):
    path.write_bytes(np.random.default_rng(0).bytes(2000))      # no "PK" at the start


def _truncated(path):
    np.savez(path, meta=_header(), x=np.zeros(300))
    path.write_bytes(path.read_bytes()[:1000])                  # "PK", no central directory


def _objects_in_meta(path):
    np.savez(path, meta=np.array([{"step": 1}], dtype=object))


def _objects_in_params(path):                                   # a readable header, then this
    np.savez(path, meta=_header(), **{"param/x": np.array([{}], dtype=object)})


def _bit_flipped(path):                                         # bit rot in a parameter's data
    np.savez(path, meta=_header(), **{"param/x": np.zeros(100)})
    data = bytearray(path.read_bytes())
    i = data.index(b"param/x.npy") + 200                        # inside its stored array
    data[i] ^= 1
    path.write_bytes(bytes(data))


CORRUPT = [   # (how the file is made, the reader, what the message says after the file's name)
    (_not_a_zip, checkpoint_meta,
     "is corrupt or not a tinyunet checkpoint: it is not an .npz file (a zip archive of arrays)"),
    (_truncated, checkpoint_meta, ("is corrupt or not a tinyunet checkpoint: a damaged or "
                                   "incomplete archive (BadZipFile: File is not a zip file)")),
    (_objects_in_meta, checkpoint_meta,
     ("is corrupt or not a tinyunet checkpoint: it holds Python objects, where a checkpoint "
      "holds only arrays and a JSON header")),
    (_objects_in_params, load_checkpoint,
     ("is corrupt: it holds Python objects, where a checkpoint holds only arrays and a JSON "
      "header")),
    (_bit_flipped, load_checkpoint, ("is corrupt: a damaged or incomplete archive (BadZipFile: "
                                     "Bad CRC-32 for file 'param/x.npy')")),
]


@pytest.mark.parametrize("make, read, why", CORRUPT, ids=lambda c: getattr(c, "__name__", ""))
def test_an_unreadable_file_is_refused_with_what_is_wrong_with_it(make, read, why, tmp_path):
    """The whole message: the file, then what is wrong: not a zip archive at all; a zip archive
    that is damaged (NumPy's error, named); one holding pickled Python objects (NumPy's
    advice to load it with allow_pickle=True, which would run the file's code, left out)."""
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(CheckpointError) as e:
        read(path)
    assert str(e.value) == f"{path} {why}"


def _arrays(*names):
    """A zip archive of arrays (an .npz file) with these names and no header."""
    return lambda path: np.savez(path, **{name: np.zeros(2) for name in names})


def _meta(text):
    """An .npz file whose header is `text`."""
    return lambda path: np.savez(path, meta=np.array(text))


NOT_A_CHECKPOINT = [   # (how the file is made, the whole message checkpoint_meta refuses it with)
    (lambda path: None, "no checkpoint at {path}"),
    (lambda path: path.mkdir(), "{path} is a folder, not a checkpoint (.npz) file"),
    # no header: the arrays it has, to recognise the file by, the first five of them
    (_arrays(), "{path} is not a tinyunet checkpoint: it has no 'meta' entry (its arrays: none)"),
    (_arrays("image", "labels"), ("{path} is not a tinyunet checkpoint: it has no 'meta' entry "
                                  "(its arrays: image, labels)")),
    (_arrays("a", "b", "c", "d", "e", "f", "g"),
     "{path} is not a tinyunet checkpoint: it has no 'meta' entry (its arrays: a, b, c, d, e)"),
    # a header of another format: the format found (as it is written in the header, None where
    # there is none) and the one this version reads
    (_meta("{not json"), f"{{path}} is not a tinyunet checkpoint of format {CHECKPOINT_FORMAT} "
                         "(found format None)"),
    (_meta("[1, 2]"), f"{{path}} is not a tinyunet checkpoint of format {CHECKPOINT_FORMAT} "
                      "(found format None)"),
    (_meta('{"model": {}}'), f"{{path}} is not a tinyunet checkpoint of format "
                             f"{CHECKPOINT_FORMAT} (found format None)"),
    (_meta(json.dumps({"format": str(CHECKPOINT_FORMAT), "model": {}})),
     f"{{path}} is not a tinyunet checkpoint of format {CHECKPOINT_FORMAT} "
     f"(found format '{CHECKPOINT_FORMAT}')"),                 # text, not the number
    # this format's header without the model's settings (not "found format 1" of format 1)
    (_meta(json.dumps({"format": CHECKPOINT_FORMAT})),
     f"{{path}} is not a tinyunet checkpoint: its header (format {CHECKPOINT_FORMAT}) has no "
     f"'model' entry, the model's settings"),
    (_meta(json.dumps({"format": CHECKPOINT_FORMAT, "model": [1, 4]})),  # not a dict of them
     f"{{path}} is not a tinyunet checkpoint: its header (format {CHECKPOINT_FORMAT}) has a "
     f"'model' entry that is a list, not the model's settings"),
]


@pytest.mark.parametrize("make, message", NOT_A_CHECKPOINT, ids=[
    "missing", "folder", "no arrays", "two arrays", "seven arrays", "not JSON", "a list",
    "no format", "format as text", "no model", "model not a dict"])
def test_a_file_that_is_not_a_checkpoint_is_refused_with_what_it_is(make, message, tmp_path):
    """The whole message: the file, then what it is: nothing, a folder, arrays with no header
    (named), a header of another format (the format found and the one expected) or of this
    format but with no model settings."""
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(CheckpointError) as e:
        checkpoint_meta(path)
    assert str(e.value) == message.format(path=path)


def test_a_buffers_name_is_all_that_follows_its_second_slash(tmp_path):
    """opt/<buffer>/<name>: the buffer is what lies between the first two slashes and the
    parameter's name all the rest, slashes and all (as param/<name>'s is)."""
    path = tmp_path / "latest.npz"
    np.savez(path, meta=_header(), **{"param/x": np.zeros(1), "param/block/x": np.zeros(2),
                                      "opt/m/x": np.full(1, 1.0), "opt/m/block/x": np.full(2, 2.0),
                                      "opt/v/x": np.full(1, 3.0)})
    meta, params, bufs = load_checkpoint(path)
    assert {k: v.tolist() for k, v in params.items()} == {"x": [0.0], "block/x": [0.0, 0.0]}
    assert {b: {k: v.tolist() for k, v in d.items()} for b, d in bufs.items()} == {
        "m": {"x": [1.0], "block/x": [2.0, 2.0]}, "v": {"x": [3.0]}}


def test_numpys_advice_to_trust_a_file_is_never_passed_on(tmp_path):
    """An array header too long to read safely: NumPy's message (two lines) advises
    allow_pickle=True; the refusal is one line, with no such advice."""
    path = tmp_path / "fields.npz"
    np.savez(path, meta=np.zeros(1, dtype=[(f"f{i}", "f8") for i in range(700)]))
    with pytest.raises(ValueError, match="allow_pickle=True"):  # what NumPy says of it
        np.load(path, allow_pickle=False)["meta"]
    with pytest.raises(CheckpointError) as e:
        checkpoint_meta(path)
    message = str(e.value)
    assert message.startswith(f"{path} is corrupt or not a tinyunet checkpoint: ")
    assert "pickle" not in message and "\n" not in message


def test_a_checkpoint_whose_arrays_do_not_fit_its_model_names_the_file_and_the_array(tmp_path):
    """Parameters that do not match the model the header describes: the file and the array."""
    path, model = write_checkpoint(tmp_path / "latest.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/out.bias"] = np.zeros(3, np.float32)           # the model has 2 classes
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(path)
    assert str(e.value) == (f"{path}: load_state_dict: 'out.bias' has shape (3,), the model "
                            f"expects {model.params['out.bias'].shape}")


# ---- the device a model is loaded on ---------------------------------------------------------
def test_a_model_is_loaded_on_the_device_asked_for_whatever_the_environment_says(tmp_path,
                                                                                 monkeypatch):
    """device="cpu" is the CPU even where $TINYUNET_DEVICE says gpu (which, with no GPU here,
    would fail): the variable only chooses where no device is given."""
    path, _ = write_checkpoint(tmp_path / "latest.npz")
    monkeypatch.setenv("TINYUNET_DEVICE", "gpu")
    assert model_from_checkpoint(path, "cpu")[0].device == "cpu"
    assert load_model(path, "cpu")[0].device == "cpu"
    monkeypatch.setenv("TINYUNET_DEVICE", "cpu")
    assert load_model(path)[0].device == "cpu"


# ---- what a checkpoint was trained on --------------------------------------------------------
def _data(source):
    return {"data": {"source": source, "labels": "membranes"}}


@pytest.mark.parametrize("header, config_json, source", [
    (_data("synthetic"), None, "synthetic"),                      # the header alone says
    ({}, json.dumps(_data("/data/isbi2012")), "/data/isbi2012"),  # config.json alone says
    (_data("synthetic"), json.dumps(_data("/data/isbi2012")), "synthetic"),   # the header first
    ({"data": {"source": None}}, json.dumps(_data("/data/isbi2012")), "/data/isbi2012"),
    ({}, None, None),                                             # neither says
    ({}, json.dumps({"steps": 6}), None),                         # config.json without data
    ({}, json.dumps([1, 2]), None),                               # JSON, but not settings
    ({}, '"synthetic"', None),
    ({}, "{not json", None),                                      # a damaged config.json
])
def test_trained_on_reads_the_header_then_the_runs_config_json(header, config_json, source,
                                                               tmp_path):
    """The data source: the header's train_config, else the run's config.json beside the
    checkpoint (runs that saved it only there), else None; never an error for a config.json
    that is damaged or not a run's settings."""
    path = tmp_path / "latest.npz"                                # only its folder is read
    if config_json is not None:
        (tmp_path / "config.json").write_text(config_json)
    meta = {"train_config": header} if header else {}
    assert trained_on(meta, path) == source
    assert trained_on(meta) == (header.get("data") or {}).get("source")   # no path: the header
