"""Loading the ISBI 2012 EM data as the challenge ships it, and folders of image/label pairs.

ISBI labels: 255 = cell interior (class 1), 0 = membrane (class 0). Everything is checked on load:
counts, sizes and label values, with errors that say what was found. Data that cannot be used
raises DataError (a ValueError; DataNotFoundError, for a missing file or folder, is also a
FileNotFoundError): the message names the file and says what is valid, so a script can show it
to its user as it is.
"""
import os
from pathlib import Path

import numpy as np

ISBI_FILES = ("train-volume.tif", "train-labels.tif", "test-volume.tif")
LABEL_VALUES = (0, 255)
IMAGE_FORMATS = "TIFF (.tif/.tiff: one image or a multi-page stack), PNG or JPEG"


class DataError(ValueError):
    """Input data that cannot be used: unreadable, not an image, wrong labels, counts or sizes."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file or folder that does not exist."""


def default_isbi_dir():
    """$TINYUNET_ISBI_DIR, else ../shared/data/isbi2012 beside the project checkout."""
    env = os.environ.get("TINYUNET_ISBI_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012"


def load_stack(path):
    """A 2-D image or a multi-page TIFF as (N, H, W); PNG/JPEG through matplotlib."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file ({IMAGE_FORMATS})")
    try:                            # whatever the readers raise, the file is not a usable image
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            arr = tifffile.imread(path)
        else:
            import matplotlib.image as mpimg
            arr = mpimg.imread(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read it as an image ({type(e).__name__}: {e}); valid "
                        f"formats are {IMAGE_FORMATS}") from None
    if path.suffix.lower() not in (".tif", ".tiff"):
        if arr.dtype != np.uint8 and arr.max() <= 1.0:        # PNGs load as floats in [0, 1]
            arr = np.rint(arr * 255).astype(np.uint8)
        if arr.ndim == 3:                                    # RGB(A) -> grey
            arr = arr[..., :3].mean(axis=-1).astype(arr.dtype)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{path}: expected a 2-D grey image or a stack (N, H, W), got shape "
                        f"{arr.shape}")
    return arr


def validate_labels(labels, name="labels"):
    """Check that label images hold only 0 and 255; say which other values were found."""
    values = np.unique(labels)
    extra = [int(v) for v in values if v not in LABEL_VALUES]
    if extra:
        raise DataError(f"{name}: label values must be 0 (membrane) and 255 (cell interior); "
                        f"found also {extra[:10]}{' ...' if len(extra) > 10 else ''}")
    return labels


def labels_to_classes(labels):
    """ISBI labels (0 / 255) -> classes (0 = membrane, 1 = cell interior), int64."""
    return (np.asarray(labels) == 255).astype(np.int64)


def _check_pair(images, labels, where):
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} label images")
    if images.shape[1:] != labels.shape[1:]:
        raise DataError(f"{where}: images are {images.shape[1]}x{images.shape[2]} but labels "
                        f"are {labels.shape[1]}x{labels.shape[2]}")


def _check_folder(folder):
    if not folder.exists():
        raise DataNotFoundError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder")


def load_isbi(data_dir=None):
    """(train_images, train_labels, test_images) as uint8 (N, H, W) from the challenge's files."""
    data_dir = Path(data_dir) if data_dir is not None else default_isbi_dir()
    _check_folder(data_dir)
    missing = [f for f in ISBI_FILES[:2] if not (data_dir / f).exists()]
    if missing:
        raise DataNotFoundError(f"{data_dir}: missing {', '.join(missing)} (the ISBI 2012 "
                                f"challenge files {', '.join(ISBI_FILES)}; see the README)")
    images = load_stack(data_dir / "train-volume.tif")
    labels = validate_labels(load_stack(data_dir / "train-labels.tif"), "train-labels.tif")
    _check_pair(images, labels, str(data_dir))
    test = data_dir / "test-volume.tif"
    return images, labels, (load_stack(test) if test.exists() else None)


def load_pairs(folder, image_glob="*image*", label_glob="*label*"):
    """A folder of image/label pairs (PNG or TIFF), matched by sorted file name.

    By default images are the files whose name contains "image" and labels those containing
    "label" (e.g. 000_image.png, 000_label.png). Returns uint8 (N, H, W) images and labels.
    """
    folder = Path(folder)
    _check_folder(folder)
    exts = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}
    imgs = sorted(p for p in folder.glob(image_glob) if p.suffix.lower() in exts)
    labs = sorted(p for p in folder.glob(label_glob) if p.suffix.lower() in exts)
    if not imgs:
        raise DataNotFoundError(f"{folder}: no image files matching {image_glob!r} (ending "
                                f"{', '.join(sorted(exts))})")
    if len(imgs) != len(labs):
        raise DataError(f"{folder}: {len(imgs)} image files but {len(labs)} label files "
                        f"(matching {image_glob!r} and {label_glob!r})")
    images = _concatenate([load_stack(p) for p in imgs], imgs)
    labels = _concatenate([validate_labels(load_stack(p), str(p)) for p in labs], labs)
    _check_pair(images, labels, str(folder))
    return images, labels


def _concatenate(stacks, paths):
    """One (N, H, W) array from stacks of one size; a DataError names the first that differs."""
    for s, p in zip(stacks, paths):
        if s.shape[1:] != stacks[0].shape[1:]:
            raise DataError(f"{p} is {s.shape[1]}x{s.shape[2]} but {paths[0].name} is "
                            f"{stacks[0].shape[1]}x{stacks[0].shape[2]}: all images of a folder "
                            f"must have one size")
    return np.concatenate(stacks)
