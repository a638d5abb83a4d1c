"""The ISBI 2012 EM data as the challenge ships it: train-volume.tif, train-labels.tif (255 = cell
interior, 0 = membrane) and test-volume.tif, 30 slices of 512x512 each, in one folder."""
import os
from pathlib import Path

from .images import (DataNotFoundError, check_folder, check_pair, load_stack, shared_data_dir,
                     validate_labels)

ISBI_FILES = ("train-volume.tif", "train-labels.tif", "test-volume.tif")


def default_isbi_dir():
    """$TINYUNET_ISBI_DIR, else images.shared_data_dir("isbi2012") (../shared/data/isbi2012
    beside the checkout, or $TINYUNET_DATA_DIR/isbi2012)."""
    env = os.environ.get("TINYUNET_ISBI_DIR")
    if env:
        return Path(env)
    return shared_data_dir("isbi2012")


def load_isbi(data_dir=None):
    """(train_images, train_labels, test_images), (N, H, W) each, from the challenge's files: the
    images in their files' grey type (uint8 for ISBI), the labels as the file holds them, checked
    to be 0 (membrane) and 255 (cell interior)."""
    data_dir = Path(data_dir) if data_dir is not None else default_isbi_dir()
    check_folder(data_dir)
    missing = [f for f in ISBI_FILES[:2] if not (data_dir / f).exists()]
    if missing:
        raise DataNotFoundError(f"{data_dir}: missing {', '.join(missing)} (the ISBI 2012 "
                                f"challenge files {', '.join(ISBI_FILES)}; see the README)")
    images = load_stack(data_dir / "train-volume.tif")
    labels = validate_labels(load_stack(data_dir / "train-labels.tif", labels=True),
                             "train-labels.tif")
    check_pair(images, labels, str(data_dir))
    test = data_dir / "test-volume.tif"
    return images, labels, (load_stack(test) if test.exists() else None)
