"""What a run trains and validates on: the data source, the slices, and the record of both.

A source is the built-in synthetic set ("synthetic", with its seed) or a folder:

    the ISBI files          train-volume.tif, train-labels.tif: membrane labels (0 / 255)
    a challenge set         sequences NN/ with NN_GT/SEG/ reference masks (data/ctc.py):
                            instance labels, only the annotated frames; with --silver also
                            the frames of its silver truth (NN_ST/SEG), every frame in all
    *image* / *mask* pairs  instance masks (0 = background, one id per cell)
    *image* / *label* pairs membrane labels (0 = membrane, 255 = cell interior)

The frames ("slices") are numbered in the source's order (for a challenge set: by sequence and
time). By default the last sixth of them (at least one) validates and the rest trains (ISBI:
0-24 and 25-29); frames with partial annotations never validate by default. Give one of
--train-slices and --val-slices and the other is the rest of the data, so that no slice is both
trained on and validated on unless both flags say so.

With --silver (a challenge set's "GT+ST" training) the slices are all the sequence's frames in
time order, and the validation slices are a block held out of training with its silver masks
and reference masks both (neighbouring frames look alike: a block, not single frames, is unseen);
the run validates on the block's fully annotated reference frames, and the block's silver truth
is there to choose a recipe on (studies/cells/) without touching the frames a run reports. By
default the block runs from the first of the reference frames that validate without --silver to
the sequence's end. A run records its
data (`choose_data`'s record: the source, the kind of labels, the slices, the synthetic set's
seed, a fingerprint of the images and labels) in config.json, and a resumed run takes exactly
that data: a source, slices or files that differ from the record are a DataError.

The messages name the command-line flags (--data, --train-slices, ...) as the commands show them.
"""
import hashlib
from collections import namedtuple
from pathlib import Path

import numpy as np

from .ctc import is_ctc_set, load_ctc
from .images import DataError, load_pairs
from .isbi import default_isbi_dir, load_isbi
from .synthetic import synthetic_em

# images (N, H, W); labels (N, H, W); kind: "membranes" or "instances" (data/targets.py);
# description; names of the frames; partial: per frame, whether its annotation is partial;
# silver: per frame, whether its mask is a challenge set's silver truth (None: no silver frames)
Data = namedtuple("Data", "images labels kind description names partial silver",
                  defaults=(None,))

SYNTHETIC = dict(n=12, size=256)             # the built-in set: 12 slices of 256 x 256


def choose_data(data=None, train_slices=None, val_slices=None, data_seed=None, run=None,
                run_name=None, silver=None):
    """(record for config.json, ((train images, labels), (val images, labels)), description).

    data: the --data argument (None: the run's data, else "synthetic"); train_slices,
    val_slices: slice specs ('0-24', '25,27'); data_seed: the synthetic set's seed. run: the
    data record of the run being resumed (from its config.json), which the arguments, when
    given, must agree with; run_name names that run in messages. silver: True for --silver
    (None: the run's choice, else False). The validation arrays of a --silver run hold only its
    block's fully annotated reference frames.
    """
    source = data_source(data) if data is not None else run["source"] if run else "synthetic"
    if run and source != run["source"]:
        given = f"--data {data}" + (f" ({source})" if source != data else "")
        raise DataError(f"{given} is not this run's data ({run['source']}): leave out --data to "
                        f"resume on the run's data, or start a new run")
    seed = data_seed
    if seed is not None and source != "synthetic":
        raise DataError(f"--data-seed is the seed of the synthetic set; {source} is a folder")
    if run and seed is not None and seed != run.get("seed"):
        raise DataError(f"--data-seed {seed} is not this run's ({run.get('seed')})")
    if seed is None:
        seed = run.get("seed") if run else 0
    ran_silver = bool(run.get("silver")) if run else False
    if run and silver is not None and bool(silver) != ran_silver:
        raise DataError(f"--silver: the run in {run_name} trained "
                        f"{'with' if ran_silver else 'without'} the silver truth; leave out "
                        f"--silver to resume it as it was, or start a new run")
    silver = ran_silver if run else bool(silver)
    loaded = load_source(source, data, seed, silver=silver)
    images, labels, n = loaded.images, loaded.labels, len(loaded.images)
    picked = {}
    for flag, spec, key in [("--train-slices", train_slices, "train_slices"),
                            ("--val-slices", val_slices, "val_slices")]:
        chosen = parse_slices(spec, n, flag) if spec is not None else None
        if run:
            if chosen is not None and slice_spec(chosen) != run[key]:
                raise DataError(f"{flag} {spec} is not this run's ({run[key]}): leave it out to "
                                f"resume on the run's slices, or start a new run")
            try:
                chosen = parse_slices(run[key], n, flag)
            except DataError:
                raise DataError(f"{source} now has {n} slices, fewer than the run's {flag[2:]} "
                                f"{run[key]}: its data have changed") from None
        picked[key] = chosen
    if not run:
        if silver and picked["train_slices"] is None and picked["val_slices"] is None:
            picked["val_slices"] = default_block(loaded.partial, loaded.silver)
        picked["train_slices"], picked["val_slices"] = complete_split(
            picked["train_slices"], picked["val_slices"], n,
            None if silver else loaded.partial)
    tr, va = picked["train_slices"], picked["val_slices"]
    checked = va
    if silver:
        checked = [i for i in va if not loaded.silver[i] and not loaded.partial[i]]
        if not checked:
            shown = ", ".join(f"{i} ({loaded.names[i]})" for i in range(n)
                              if not loaded.silver[i] and not loaded.partial[i])
            raise DataError(f"--val-slices {slice_spec(va)}: with --silver the run validates "
                            f"on the fully annotated reference frames of the block held out, "
                            f"and this block has none; the reference frames are the slices "
                            f"{shown}")
    train, val = (images[tr], labels[tr]), (images[checked], labels[checked])
    record = dict(source=source, labels=loaded.kind, train_slices=slice_spec(tr),
                  val_slices=slice_spec(va), seed=seed if source == "synthetic" else None,
                  fingerprint=fingerprint(*train, *val))
    if silver:
        record["silver"] = True
    if run and run.get("fingerprint") != record["fingerprint"]:
        raise DataError(f"the images or labels in {source} have changed since the run in "
                        f"{run_name} was made: it resumes only on the same data")
    return record, (train, val), loaded.description


def data_source(arg):
    """--data as it is recorded: 'synthetic' or a folder's absolute path ('isbi':
    default_isbi_dir())."""
    if arg == "synthetic":
        return "synthetic"
    folder = default_isbi_dir() if arg == "isbi" else Path(arg).expanduser()
    return str(folder.resolve())


def load_source(source, arg=None, seed=0, silver=False):
    """The Data of a source ("synthetic" or a folder); a DataError if it cannot be used.
    silver: a challenge set's frames with its silver truth too (data/ctc.py)."""
    if silver and (source == "synthetic" or Path(source).is_dir() and not is_ctc_set(source)):
        what = "the built-in synthetic set" if source == "synthetic" else f"{arg or source}"
        raise DataError(f"--silver: {what} is not a cell tracking challenge set (sequences NN/ "
                        f"with NN_GT/SEG/ reference and NN_ST/SEG/ silver-truth masks)")
    if source == "synthetic":
        images, labels = synthetic_em(seed=seed, **SYNTHETIC)
        return Data(images, labels, "membranes", "synthetic EM (built in)", None,
                    [False] * len(images))
    folder = Path(source)
    shown = (f"--data {arg}" if arg else "the run's data") + (f" ({folder})" if arg != source
                                                              else "")
    if not folder.exists():
        isbi = (" (`--data isbi` is $TINYUNET_ISBI_DIR, else ../shared/data/isbi2012 beside the "
                "checkout)" if arg == "isbi" else "")
        raise DataError(f"{shown}: no such folder{isbi}")
    if not folder.is_dir():
        raise DataError(f"{shown} is a file; give the folder that holds train-volume.tif and "
                        f"train-labels.tif, or *image* / *label* pairs")
    if (folder / "train-volume.tif").exists() or (folder / "train-labels.tif").exists():
        images, labels, _ = load_isbi(folder)
        return Data(images, labels, "membranes", f"ISBI 2012 ({folder})", None,
                    [False] * len(images))
    if is_ctc_set(folder):
        f = load_ctc(folder, silver=silver)
        n_ref = len(f.names) - sum(f.silver)
        also = f" and {sum(f.silver)} frames of silver truth" if silver else ""
        return Data(f.images, f.instances, "instances", f"cell tracking challenge set "
                    f"({folder}): {n_ref} annotated frames, {sum(f.partial)} partial{also}",
                    f.names, f.partial, f.silver if silver else None)
    if not any(p.is_file() for p in folder.glob("*image*")):
        raise DataError(f"{shown} holds neither the ISBI files (train-volume.tif, "
                        f"train-labels.tif), a cell tracking challenge set (NN/ beside "
                        f"NN_GT/SEG/), *image* / *mask* pairs nor *image* / *label* pairs (PNG, "
                        f"TIFF or JPEG)")
    if any(p.is_file() for p in folder.glob("*mask*")):
        images, labels = load_pairs(folder, label_glob="*mask*", kind="instances")
        return Data(images, labels, "instances", f"image/mask pairs ({folder})", None,
                    [False] * len(images))
    images, labels = load_pairs(folder)
    return Data(images, labels, "membranes", f"image/label pairs ({folder})", None,
                [False] * len(images))


def default_split(n, partial=None):
    """(train, val) slices: the last sixth of the fully annotated slices (at least one)
    validates, the rest trains (no slice fully annotated: the last validates)."""
    if n < 2:
        raise DataError(f"the data has only {n} slice, too few to split: give --train-slices 0 "
                        f"and --val-slices 0 to train and validate on it")
    full = [i for i in range(n) if not (partial and partial[i])]
    n_val = max(1, n // 6)
    val = full[-n_val:] if len(full) > n_val else full[-1:] or [n - 1]
    return [i for i in range(n) if i not in val], val


def default_block(partial, silver):
    """--silver's default validation block: from the first reference frame that validates by
    default (default_split over the reference frames alone) to the last frame."""
    reference = [i for i, s in enumerate(silver) if not s]
    _, val = default_split(len(reference), [partial[i] for i in reference])
    return list(range(reference[val[0]], len(silver)))


def complete_split(train, val, n, partial=None):
    """(train, val) from the slices given (None: not given): neither given, the default split;
    one given, the other is the rest of the data (a validation slice is never trained on; the
    rest validates without the partially annotated slices); both given, as given."""
    if train is None and val is None:
        return default_split(n, partial)
    if train is None:
        train = [i for i in range(n) if i not in val]
        if not train:
            raise DataError(f"--val-slices takes every slice of the data ({n}): none is left to "
                            f"train on; give --train-slices too")
    elif val is None:
        val = [i for i in range(n) if i not in train and not (partial and partial[i])]
        if not val:
            raise DataError(f"--train-slices leaves no fully annotated slice of the data's {n} "
                            f"to validate on; give --val-slices too")
    return train, val


def parse_slices(spec, n, flag="--slices"):
    """'0-24' or '25,27,29' -> slice numbers, checked against the n slices of the data."""
    out = []
    for part in str(spec).split(","):
        a, dash, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b if dash else a)
        except ValueError:
            raise DataError(f"{flag} {spec!r}: expected slice numbers like '0-24' or '25,27,29' "
                            f"(the data has slices 0-{n - 1})") from None
        if hi < lo:
            raise DataError(f"{flag} {spec}: the range {part.strip()} is empty (write low-high)")
        out.extend(range(lo, hi + 1))
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise DataError(f"{flag} {spec}: slice {bad[0]} does not exist: the data has {n} slices "
                        f"(0-{n - 1})")
    return out


def slice_spec(indices):
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], None
    for i, k in enumerate(indices):
        if start is None:
            start = k
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            parts.append(f"{start}-{k}" if k > start else f"{k}")
            start = None
    return ",".join(parts)


def fingerprint(*arrays):
    """A short hash of the data a run trains and validates on."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
