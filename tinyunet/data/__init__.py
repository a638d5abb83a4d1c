"""Data: the ISBI 2012 stacks, folders of image/label pairs, and a built-in synthetic EM set."""
from .isbi import (DataError, DataNotFoundError, default_isbi_dir, labels_to_classes, load_isbi,
                   load_pairs, load_stack, validate_labels)
from .synthetic import synthetic_em
