"""The cell tracking challenge's layout, and folders of image / instance-mask pairs.

A challenge set (celltrackingchallenge.net, e.g. DIC-C2DH-HeLa) is a folder of sequences:

    01/t000.tif ...              the frames of sequence 01 (8- or 16-bit grey)
    01_GT/SEG/man_seg002.tif     reference segmentations of some frames: one id per cell
    01_ST/SEG/man_seg000.tif     (optional) the "silver truth": computer-made, every frame

Only frames with a reference segmentation train. Some reference frames are partial: the
annotator drew a few of the cells only (DIC-HeLa's frame 67: 3 of about 17). Their other cells
are not background, and teaching the network that they are would teach it to miss cells; so
where the silver truth has a cell that no reference cell covers (by more than half), that cell,
grown by IGNORE_MARGIN px, is marked -1: unannotated, left out of the loss (data/targets.py).
A frame is partial when it has such a cell. Without a silver truth every frame counts as fully
annotated.

The challenge's "GT+ST" training (`silver=True`, the train command's --silver) trains on the
silver truth too: every frame that has a reference or a silver mask is a frame of the set, in
time order, with its reference mask where it has one (marked as above) and its silver one
otherwise. The silver truth is computer-made: it holds every cell of a frame, but its borders are
a program's, not an annotator's.
"""
import os
import re
from collections import namedtuple
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .images import DataError, DataNotFoundError, instance_labels, load_stack, shared_data_dir

IGNORE_MARGIN = 5           # px around an unannotated cell, also left out of the loss

# images (N, H, W); instances int32 (N, H, W); names ["01/t002", ...]; partial, silver: per frame,
# whether its reference mask is partial, whether its mask is the silver truth (no reference)
Frames = namedtuple("Frames", "images instances names partial silver")


def default_ctc_dir():
    """$TINYUNET_CTC_DIR, else images.shared_data_dir("ctc") (../shared/data/ctc beside the
    checkout, or $TINYUNET_DATA_DIR/ctc): the folder of the challenge's sets (DIC-C2DH-HeLa,
    PhC-C2DH-U373, ...)."""
    env = os.environ.get("TINYUNET_CTC_DIR")
    if env:
        return Path(env)
    return shared_data_dir("ctc")


def is_ctc_set(folder):
    """True for a folder that holds challenge sequences with reference segmentations."""
    folder = Path(folder)
    return folder.is_dir() and any(p.is_dir() for p in folder.glob("*_GT/SEG"))


def load_ctc(folder, sequences=None, silver=False):
    """The Frames of a challenge set: its reference frames, or with silver=True every frame
    that has a reference or a silver mask (a reference mask where there is one).

    images: (N, H, W) in the frames' own dtype; instances: int32 (N, H, W), 0 = background,
    1.. = cells, -1 = unannotated (see the module docstring); names: ["01/t002", ...], by
    sequence and time; partial: bool per frame; silver: bool per frame, True where the mask is
    the silver truth. sequences: names such as ["01"] (default: every sequence that has a
    _GT/SEG folder). All frames must have one size (a set's sequences do).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"no such folder: {folder}")
    found = sorted(p.parent.name[:-3] for p in folder.glob("*_GT/SEG") if p.is_dir())
    if sequences is None:
        sequences = found
    if not found:
        raise DataNotFoundError(f"{folder} holds no reference segmentations: a challenge set "
                                f"has sequences NN/ with NN_GT/SEG/man_segTTT.tif beside them")
    missing = [s for s in sequences if s not in found]
    if missing:
        raise DataNotFoundError(f"{folder}: no sequence {missing[0]} with reference masks "
                                f"(sequences with masks: {', '.join(found)})")
    images, instances, names, partial, is_silver = [], [], [], [], []
    for seq in sequences:
        masks = sorted((folder / f"{seq}_GT" / "SEG").glob("man_seg*.tif"))
        if not masks:
            raise DataNotFoundError(f"{folder / (seq + '_GT') / 'SEG'} holds no man_segTTT.tif "
                                    f"reference masks")
        reference = {_frame_number(p): p for p in masks}
        silvers = {}
        if silver:
            silvers = {_frame_number(p): p
                       for p in sorted((folder / f"{seq}_ST" / "SEG").glob("man_seg*.tif"))}
            if not silvers:
                raise DataNotFoundError(f"--silver: {folder / (seq + '_ST') / 'SEG'} holds no "
                                        f"man_segTTT.tif silver-truth masks (the challenge "
                                        f"ships them as NN_ST/SEG beside NN_GT/SEG)")
        for t in sorted(set(reference) | set(silvers), key=int):
            mask_path = reference.get(t, silvers.get(t))
            frame = folder / seq / f"t{t}.tif"
            if not frame.exists():
                raise DataNotFoundError(f"{mask_path} has no frame: {frame} does not exist")
            image = _one(load_stack(frame), frame)
            mask = instance_labels(_one(load_stack(mask_path, labels=True), mask_path),
                                   mask_path)
            if mask.shape != image.shape:
                raise DataError(f"{mask_path} is {mask.shape[0]}x{mask.shape[1]} but its frame "
                                f"{frame.name} is {image.shape[0]}x{image.shape[1]}")
            st = folder / f"{seq}_ST" / "SEG" / f"man_seg{t}.tif"
            if t in reference and st.exists():
                mask = mark_unannotated(mask, _one(load_stack(st, labels=True), st))
            images.append(image)
            instances.append(mask)
            names.append(f"{seq}/t{t}")
            partial.append(bool((mask < 0).any()))
            is_silver.append(t not in reference)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataError(f"{folder}: the frames have different sizes {sorted(shapes)}: train on "
                        f"one sequence size at a time")
    return Frames(np.stack(images), np.stack(instances), names, partial, is_silver)


def _frame_number(mask_path):
    """'067' of man_seg067.tif; a DataError for any other name."""
    t = re.fullmatch(r"man_seg(\d+)\.tif", mask_path.name)
    if t is None:
        raise DataError(f"{mask_path}: expected a name man_segTTT.tif")
    return t.group(1)


def _one(stack, path):
    if len(stack) != 1:
        raise DataError(f"{path}: expected one 2-D image, got a stack of {len(stack)}")
    return stack[0]


def mark_unannotated(mask, silver, margin=IGNORE_MARGIN):
    """`mask` with -1 on the silver truth's cells that no reference cell covers by more than
    half, grown by `margin` px (never over a reference cell)."""
    silver = np.asarray(silver)
    ids, sizes = np.unique(silver[silver > 0], return_counts=True)
    covered = np.unique(silver[(silver > 0) & (mask > 0)], return_counts=True)
    cover = dict(zip(covered[0].tolist(), covered[1].tolist()))
    missing = [i for i, n in zip(ids.tolist(), sizes.tolist()) if cover.get(i, 0) <= 0.5 * n]
    if not missing:
        return mask
    region = np.isin(silver, missing)
    if margin > 0:
        region = ndi.binary_dilation(region, iterations=margin)
    out = mask.copy()
    out[region & (mask == 0)] = -1
    return out
