import os
from pathlib import Path

import numpy as np
import pytest

from tinyunet import backend

ROOT = Path(__file__).resolve().parents[1]
ISBI_DIR = Path(os.environ.get("TINYUNET_ISBI_DIR", ROOT.parent / "shared" / "data" / "isbi2012"))

# One fixture over both array modules: the op tests run on NumPy always, and on CuPy as well
# where CuPy and a GPU are present.
_MODULES = ["numpy"] + (["cupy"] if backend.gpu_available() else [])


@pytest.fixture(params=_MODULES)
def xp(request):
    return backend.xp_for("gpu" if request.param == "cupy" else "cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def isbi_dir():
    if not (ISBI_DIR / "train-labels.tif").exists():
        pytest.skip(f"ISBI 2012 data not found at {ISBI_DIR}")
    return ISBI_DIR
