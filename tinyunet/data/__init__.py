"""Data: images and labels from files, the ISBI 2012 stacks, the built-in synthetic EM set, what
a run trains on (selection), and the augmented training tiles (samples)."""
from .images import (DataError, DataNotFoundError, grey_range, labels_to_classes, load_folder,
                     load_pairs, load_stack, normalisation, normalise, validate_labels)
from .isbi import default_isbi_dir, load_isbi
from .synthetic import synthetic_em

__all__ = ["DataError", "DataNotFoundError", "grey_range", "labels_to_classes", "load_folder", "load_pairs",
           "load_stack", "normalisation", "normalise", "validate_labels", "default_isbi_dir",
           "load_isbi", "synthetic_em"]
