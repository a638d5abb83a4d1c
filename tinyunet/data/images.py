"""Images from files: stacks, folders of images, image/label pairs, label checks, grey values.

Membrane labels are binary, as the ISBI challenge ships them: 255 = cell interior (class 1),
0 = membrane (class 0); instance labels (cells) are integer masks, 0 = background, each cell
its own number, as the cell tracking challenge ships them. Everything is checked on load:
counts, sizes and label values, with errors that say what was found. Data that cannot be used raises DataError (a ValueError; DataNotFoundError, for
a missing file or folder, is also a FileNotFoundError): the message names the file and says what
is valid, so a command can show it to its user as it is.

Grey values: integer images are scaled to [0, 1] by their dtype's range (8-bit / 255, 16-bit /
65535: `grey_range`), floats taken as they are, then normalised by the mean and standard
deviation of the training images (`normalisation`, `normalise`); a checkpoint keeps the two
numbers and the dtype the model was trained on.
"""
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataWarning, UserError

IMAGE_FORMATS = "TIFF (.tif/.tiff: one image or a multi-page stack), PNG or JPEG"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


class DataError(UserError, ValueError):
    """Input data that cannot be used: unreadable, not an image, wrong labels, counts or sizes."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file or folder that does not exist."""


def shared_data_dir(name):
    """Where the data set `name` ("isbi2012", "ctc") is by default: in $TINYUNET_DATA_DIR/name,
    else in ../shared/data/name beside the checkout tinyunet runs from (an editable install),
    else beside the working folder (../shared/data/name or ./data/name: an installed tinyunet
    run from a project folder); the first that exists, or the checkout's for the error message."""
    env = os.environ.get("TINYUNET_DATA_DIR")
    if env:
        return Path(env) / name
    here = Path(__file__).resolve().parents[2]           # the checkout, for an editable install
    candidates = [here.parent / "shared" / "data" / name] if (here / "pyproject.toml").exists() \
        else []
    candidates += [Path.cwd().parent / "shared" / "data" / name, Path.cwd() / "data" / name]
    return next((c for c in candidates if c.exists()), candidates[0])


def load_stack(path, labels=False):
    """A 2-D image or a multi-page TIFF as (N, H, W), in the file's own dtype (8- or 16-bit,
    float); TIFF through tifffile, PNG and JPEG through imagecodecs. Checked as check_image
    does: colour images become grey (with a DataWarning), never a stack of rows; labels=True
    refuses them instead (a label image has no colours to average)."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file ({IMAGE_FORMATS})")
    colour = False
    try:                            # whatever the readers raise, the file is not a usable image
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                colour = "S" in series.axes and series.shape[series.axes.index("S")] in (3, 4)
                arr = series.asarray()
                if colour and series.axes.index("S") != len(series.axes) - 1:
                    arr = np.moveaxis(arr, series.axes.index("S"), -1)   # planar: samples last
        else:
            import imagecodecs
            codec = {".png": "png", ".jpg": "jpeg8", ".jpeg": "jpeg8"}.get(path.suffix.lower())
            arr = imagecodecs.imread(path, codec=codec)
            colour = arr.ndim == 3 and arr.shape[-1] in (3, 4)
    except Exception as e:
        why = (str(e).splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read it as an image ({type(e).__name__}: {why}); valid "
                        f"formats are {IMAGE_FORMATS}") from None
    return check_image(arr, path, colour=colour, labels=labels)


def check_image(arr, where, colour=False, labels=False):
    """An image or stack as a checked grey (N, H, W) array.

    colour: the last axis holds RGB(A) samples: averaged to grey, with a DataWarning (a label
    image: a DataError). Non-finite values (NaN, inf) are a DataError that counts them; an image
    of one value throughout gets a DataWarning (nothing to segment: empty or constant)."""
    arr = np.asarray(arr)
    if colour:
        if labels:
            raise DataError(f"{where}: a colour image (RGB{'A' if arr.shape[-1] == 4 else ''}) "
                            f"where a label image (one grey value per class or cell) is expected")
        warnings.warn(f"{where}: a colour image (RGB{'A' if arr.shape[-1] == 4 else ''}): "
                      f"segmented as grey, the mean of its R, G and B", DataWarning, stacklevel=3)
        arr = arr[..., :3].mean(axis=-1).astype(arr.dtype)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{where}: expected a 2-D grey image or a stack (N, H, W), got shape "
                        f"{arr.shape}")
    if arr.dtype.kind not in "uifb":
        raise DataError(f"{where}: pixels of type {arr.dtype} are not grey values")
    check_finite(arr, where)
    if arr.size and not labels and arr.min() == arr.max():
        warnings.warn(f"{where}: every pixel is {arr.flat[0]}: an empty or constant image, with "
                      f"nothing to segment", DataWarning, stacklevel=3)
    return arr


def check_finite(arr, where, what="pixels"):
    """A DataError that counts the NaN and infinite values of a float array, if any."""
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise DataError(f"{where}: {bad} of {arr.size} {what} are NaN or infinite: an image "
                            f"must hold finite grey values")


def validate_labels(labels, name="labels", cell=(255,)):
    """Check that label images hold only 0 (membrane) and one cell value of `cell` (the
    ISBI files: 255; a scorer may also accept 1); say which other values were found. A binary
    mask of 0 and 1 (the commonest format of one's own labels) is read as 0 and 255, with a
    line that says so."""
    values = [int(v) for v in np.unique(labels)]
    if 1 not in cell and values in ([0, 1], [1]):
        warnings.warn(f"{name}: labels 0 and 1, read as 0 (membrane or background) and 1 (cell "
                      f"interior), as 0 and 255 are", DataWarning, stacklevel=2)
        return (np.asarray(labels) > 0).astype(np.uint8) * np.uint8(255)
    extras = [[v for v in values if v not in (0, c)] for c in cell]
    if all(extras):
        extra = extras[0]
        ones = " (or 0 and 1)" if 1 not in cell else ""
        raise DataError(f"{name}: label values must be 0 (membrane) and "
                        f"{' or '.join(map(str, cell))} (cell interior){ones}; found also "
                        f"{extra[:10]}{' ...' if len(extra) > 10 else ''}")
    return labels


def instance_labels(mask, where):
    """An instance mask as int32 (0 = background, one id per cell); a DataError if its values
    are not whole numbers >= 0."""
    mask = np.asarray(mask)
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or np.any(mask != np.round(mask)):
            raise DataError(f"{where}: instance labels must be whole numbers (one id per cell), "
                            f"got {mask.dtype} values such as {mask[mask != np.round(mask)][:3]}")
    elif mask.dtype.kind not in "iub":
        raise DataError(f"{where}: instance labels must be integers, got {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise DataError(f"{where}: instance labels must be >= 0 (0 = background), found "
                        f"{int(mask.min())}")
    if mask.size and mask.max() > np.iinfo(np.int32).max:
        raise DataError(f"{where}: instance ids up to {int(mask.max())} do not fit int32")
    return mask.astype(np.int32)


def labels_to_classes(labels):
    """ISBI labels (0 / 255) -> classes (0 = membrane, 1 = cell interior), uint8: the one place
    that knows that 255 is the cell interior."""
    return (np.asarray(labels) == 255).astype(np.uint8)


def check_pair(images, labels, where):
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} label images")
    if images.shape[1:] != labels.shape[1:]:
        raise DataError(f"{where}: images are {images.shape[1]}x{images.shape[2]} but labels "
                        f"are {labels.shape[1]}x{labels.shape[2]}")


def check_folder(folder):
    if not folder.exists():
        raise DataNotFoundError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder")


def load_pairs(folder, image_glob="*image*", label_glob="*label*", kind="membranes"):
    """A folder of image/label pairs (PNG or TIFF), matched by sorted file name.

    By default images are the files whose name contains "image" and labels those containing
    "label" (e.g. 000_image.png, 000_label.png). Returns (N, H, W) images in their file's grey
    type (8- or 16-bit integers, or floats) and labels as their files hold them: checked to be
    0 / 255 (kind="membranes") or instance numbers (kind="instances").
    """
    folder = Path(folder)
    imgs, labs = image_files(folder, image_glob), image_files(folder, label_glob)
    if not imgs:
        raise DataNotFoundError(f"{folder}: no image files matching {image_glob!r} (ending "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(imgs) != len(labs):
        raise DataError(f"{folder}: {len(imgs)} image files but {len(labs)} label files "
                        f"(matching {image_glob!r} and {label_glob!r})")
    images = load_images(imgs)
    if kind == "membranes":
        labels = load_images(labs, lambda stack, p: validate_labels(stack, str(p)), labels=True)
    else:
        labels = load_images(labs, lambda stack, p: instance_labels(stack, str(p)), labels=True)
    check_pair(images, labels, str(folder))
    return images, labels


def image_files(folder, pattern="*"):
    """The image files (IMAGE_SUFFIXES) of a folder matching `pattern`, sorted by name."""
    folder = Path(folder)
    check_folder(folder)
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(folder, pattern="*", labels=False):
    """The images of a folder (sorted by name) as one (N, H, W) stack."""
    paths = image_files(folder, pattern)
    if not paths:
        raise DataNotFoundError(f"{folder}: the folder holds no images (ending "
                                f"{', '.join(IMAGE_SUFFIXES)})")
    return load_images(paths, labels=labels)


def load_images(paths, check=None, labels=False):
    """One (N, H, W) array from the stacks of `paths` (check(stack, path) on each, if given;
    labels: label images, see load_stack); a DataError names the first of another size."""
    stacks = [load_stack(p, labels) if check is None else check(load_stack(p, labels), p)
              for p in paths]
    for s, p in zip(stacks, paths):
        if s.shape[1:] != stacks[0].shape[1:]:
            raise DataError(f"{p} is {s.shape[1]}x{s.shape[2]} but {paths[0].name} is "
                            f"{stacks[0].shape[1]}x{stacks[0].shape[2]}: all images of a folder "
                            f"must have one size")
    return np.concatenate(stacks)


def grey_range(dtype):
    """What grey values are divided by to lie in [0, 1]: an integer type's largest value (255
    for 8-bit images, 65535 for 16-bit ones), 1 for floats (taken as they are)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def normalisation(images):
    """(mean, std) of the grey values of training images scaled to [0, 1] by their dtype's
    range (grey_range)."""
    x = np.asarray(images, np.float64) / grey_range(np.asarray(images).dtype)
    return float(x.mean()), float(x.std() or 1.0)


def normalise(images, mean, std):
    """Grey values -> float32 (x / grey_range(dtype) - mean) / std: an 8-bit image / 255, a
    16-bit one / 65535, floats as they are."""
    images = np.asarray(images)
    scale = grey_range(images.dtype)
    return ((np.asarray(images, np.float32) / scale - mean) / std).astype(np.float32)
