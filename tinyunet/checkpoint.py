"""Checkpoints: the format, the atomic write, and reading one back with clear errors.

A checkpoint is one .npz file (a zip archive of arrays, no pickles):
    param/<name>         the model's parameters (UNet.state_dict names, PyTorch layouts)
    opt/<buffer>/<name>  the optimizer's buffers (SGD: velocity; Adam: m, v)
    ema/<name>           the moving average of the parameters, if the run keeps one
                         (optim.EMA): then it is the run's model (model_from_checkpoint)
    meta                 a JSON header: format, step, the model's configuration (UNet.config),
                         the optimizer's settings, the dropout random state, and what the
                         writer adds (train.Trainer: the data random state, the normalisation,
                         the training settings, the unfinished log window, ...)

Files are written atomically (files.atomic_write), so a crash never leaves a half-written file
in place of a good one. Reading
never unpickles (a checkpoint from elsewhere could run code), and anything that is not a usable
checkpoint is a CheckpointError whose message names the file and says what is wrong with it.
"""
import json
from pathlib import Path

import numpy as np

from . import backend
from .errors import UserError
from .files import atomic_write
from .model import UNet

CHECKPOINT_FORMAT = 1


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used: corrupt, not a tinyunet checkpoint, or mismatched."""


def rng_state(rng):
    """The state of a NumPy Generator, JSON-able."""
    return rng.bit_generator.state


def save_checkpoint(path, model, optimizer, step, extra, ema=None):
    """Model parameters, optimizer buffers, the parameters' moving average (an optim.EMA, if
    given), step and `extra` (JSON-able), atomically."""
    arrays = {f"param/{k}": backend.to_numpy(v) for k, v in model.params.items()}
    opt = optimizer.state_dict()
    for buf, d in opt.pop("buffers").items():
        arrays.update({f"opt/{buf}/{k}": v for k, v in d.items()})
    average = None
    if ema is not None:
        state = ema.state_dict()
        arrays.update({f"ema/{k}": v for k, v in state.pop("average").items()})
        average = state                                   # decay, updates
    meta = dict(format=CHECKPOINT_FORMAT, step=step, model=model.config, optimizer=opt,
                dropout_rng=model.rng.state,
                ema=average, **extra)
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path, average=False):
    """(meta, params, optimizer buffers) from a checkpoint; CheckpointError if it is unusable.

    average=True: the parameters' moving average in place of the parameters, where the
    checkpoint has one (meta["ema"] says), else the parameters."""
    path = Path(path)
    meta = checkpoint_meta(path)
    which = "ema/" if average and meta.get("ema") else "param/"
    try:
        with np.load(path, allow_pickle=False) as z:
            params = {k[len(which):]: z[k] for k in z.files if k.startswith(which)}
            bufs = {}
            for k in z.files:
                if k.startswith("opt/"):
                    _, buf, name = k.split("/", 2)
                    bufs.setdefault(buf, {})[name] = z[k]
    except Exception as e:                       # zip or value errors in the arrays
        raise CheckpointError(f"{path} is corrupt: {_why_unreadable(path, e)}") from None
    return meta, params, bufs


def checkpoint_meta(path):
    """A checkpoint's JSON header (format, step, model, settings) without loading its arrays."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint (.npz) file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise CheckpointError(f"{path} is not a tinyunet checkpoint: it has no 'meta' "
                                      f"entry (its arrays: {', '.join(z.files[:5]) or 'none'})")
            header = str(z["meta"])
    except CheckpointError:
        raise
    except Exception as e:                       # not a zip, damaged, pickled objects
        raise CheckpointError(f"{path} is corrupt or not a tinyunet checkpoint: "
                              f"{_why_unreadable(path, e)}") from None
    try:
        meta = json.loads(header)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not a tinyunet checkpoint of format "
                              f"{CHECKPOINT_FORMAT} (found format {found!r})")
    if not isinstance(meta.get("model"), dict):
        what = ("no 'model' entry, the model's settings" if "model" not in meta else
                f"a 'model' entry that is a {type(meta['model']).__name__}, not the model's "
                f"settings")
        raise CheckpointError(f"{path} is not a tinyunet checkpoint: its header (format "
                              f"{CHECKPOINT_FORMAT}) has {what}")
    return meta


def _why_unreadable(path, e):
    """NumPy's error said for a user, without its advice to load pickles (allow_pickle), which
    would run code from an untrusted file."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK":                                   # every .npz is a zip archive
        return "it is not an .npz file (a zip archive of arrays)"
    if "pickle" in str(e) or "Object arrays" in str(e):
        return "it holds Python objects, where a checkpoint holds only arrays and a JSON header"
    return f"a damaged or incomplete archive ({type(e).__name__}: {e})"


def model_from_checkpoint(path, device=None, average=True, dtype=None):
    """(model, meta) rebuilt from a checkpoint's saved configuration, on `device` (None:
    $TINYUNET_DEVICE, else the CPU): with the parameters' moving average where the run kept
    one (average=False: the raw parameters); in `dtype` ("float32": as a shipped model holds
    them) instead of the run's where given."""
    meta, params, _ = load_checkpoint(path, average)
    spec = dict(meta["model"], **({"dtype": dtype} if dtype else {}))
    model = UNet(**spec, device="cpu")      # built where the arrays are, then moved
    try:
        model.load_state_dict(params)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model.to(device), meta


MODELS = Path(__file__).resolve().parent / "models"       # the models predict --model finds


def shipped_models(folder=MODELS):
    """{name: file} of the models in `folder`: isbi2012 (which ships with tinyunet) and every
    model that `tinyunet ship` wrote there."""
    return {"isbi2012": folder / "isbi2012.npz",
            **{p.stem: p for p in sorted(folder.glob("*.npz"))}}


SHIPPED = shipped_models()


def model_file(name_or_path):
    """The file of a shipped model by name, or the checkpoint file given; a CheckpointError
    where a shipped model's file is missing from this installation."""
    path = SHIPPED.get(str(name_or_path), name_or_path)
    if str(name_or_path) in SHIPPED and not Path(path).exists():
        raise CheckpointError(f"the shipped model {name_or_path!r} is not in this installation "
                              f"({path} is missing)")
    return Path(path)


def load_model(name_or_path, device=None):
    """(model, meta) of a shipped model by name ("isbi2012": EM membranes, the cpu recipe
    trained on ISBI 2012 slices 0-24; meta["provenance"] says how, tinyunet/models/) or of a
    checkpoint file."""
    return model_from_checkpoint(model_file(name_or_path), device)


def ship(checkpoint, out, provenance):
    """Write the model of a checkpoint as a small file to ship: its parameters (the moving
    average where the run kept one) in float32, no optimizer state, its configuration and
    normalisation, and `provenance` (a JSON-able dict: command, commit, steps, scores)."""
    meta, params, _ = load_checkpoint(checkpoint, average=True)
    keep = {k: meta[k] for k in ("step", "model", "mean", "std", "image_dtype", "train_config")
            if k in meta}
    keep["model"] = dict(keep["model"], dtype="float32")      # rebuilt as it is stored
    header = dict(format=CHECKPOINT_FORMAT, optimizer=None, dropout_rng=None, ema=None,
                  provenance=provenance, **keep)
    arrays = {f"param/{k}": np.asarray(v, np.float32) for k, v in params.items()}
    arrays["meta"] = np.array(json.dumps(header))
    atomic_write(out, lambda f: np.savez_compressed(f, **arrays))
    return Path(out)


def trained_on(meta, path=None):
    """The data source the checkpoint (at `path`) was trained on ('synthetic' or a folder), as
    its run recorded it: in the header's train_config (train.Trainer saves it there) or in
    config.json beside it; None where neither says (a Trainer given no data record)."""
    configs = [meta.get("train_config") or {}]
    try:
        configs.append(json.loads((Path(path).parent / "config.json").read_text()))
    except (OSError, ValueError, TypeError):           # no run folder beside it (or no path)
        pass
    for cfg in configs:
        data = cfg.get("data") if isinstance(cfg, dict) else None
        if isinstance(data, dict) and data.get("source"):
            return data["source"]
    return None
