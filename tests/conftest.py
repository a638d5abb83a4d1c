import os
from pathlib import Path

import numpy as np
import pytest

from tinyunet import UNet, backend
from tinyunet.checkpoint import save_checkpoint
from tinyunet.commands.cli import run_cli
from tinyunet.config import TrainConfig
from tinyunet.data import synthetic_em
from tinyunet.optim import SGD

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
def ctc_dir():
    """The cell tracking challenge's sets (../shared/data/ctc, or $TINYUNET_DATA_DIR/ctc)."""
    from tinyunet.data.ctc import default_ctc_dir
    folder = default_ctc_dir()
    if not (folder / "DIC-C2DH-HeLa").is_dir():
        pytest.skip(f"the cell tracking challenge's data not found at {folder}")
    return folder


@pytest.fixture
def isbi_dir():
    if not (ISBI_DIR / "train-labels.tif").exists():
        pytest.skip(f"ISBI 2012 data not found at {ISBI_DIR}")
    return ISBI_DIR


# ---- builders the test modules share (import them: from .conftest import small_model, ...) ----

def small_model(depth=2, base=2, seed=0, dtype="float32", biases=False):
    """A small UNet; biases=True gives it non-zero biases (outputs that vary across an image; an
    export or a route that dropped them would show)."""
    model = UNet(base_channels=base, depth=depth, seed=seed, dtype=dtype)
    if biases:
        rng = np.random.default_rng(seed + 1)
        for k, v in model.params.items():
            if k.endswith("bias"):
                v[...] = rng.standard_normal(v.shape) * 0.2
    return model


def write_checkpoint(path, model=None, step=0, **extra):
    """A checkpoint of `model` (default: small_model()) at `path` as a run writes it: the grey
    values' mean and std (0.5, 0.2) and the run's config (tile 60) unless given, and `extra`;
    returns (path, model)."""
    model = model or small_model()
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(mean=0.5, std=0.2, train_config=dict(tile=60))
    save_checkpoint(path, model, SGD(model, 0.01), step, {**meta, **extra})
    return path, model


def small_config(**kw):
    """A TrainConfig that trains in a second or two: base 2, depth 2, tile 92."""
    base = dict(base_channels=2, depth=2, tile=92, steps=6, lr=0.01, warmup=2, val_every=3,
                log_every=1, seed=0)
    return TrainConfig(**{**base, **kw})


def small_data(n=3, size=48, seed=1):
    """(train, val) of the synthetic EM set: the last image validates."""
    images, labels = synthetic_em(n=n, size=size, cell_size=16, seed=seed)
    return (images[:-1], labels[:-1]), (images[-1:], labels[-1:])


def small_trainer(run_dir, data=None, **kw):
    """A Trainer of small_config(**kw) on small_data() (or `data`) in run_dir."""
    from tinyunet.train import Trainer
    return Trainer(small_config(**kw), *(data or small_data()), run_dir, progress=False)


def run_example(main, argv, capsys):
    """(exit status, stdout, stderr) of run_cli(main, argv): a UserError is status 2 and one
    `error:` line on stderr, as from the shell."""
    try:
        run_cli(main, [str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(main, argv, capsys):
    """The one `error: ...` line (exit status 2, no traceback) that main(argv) must print; the
    line is returned."""
    code, out, err = run_example(main, argv, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (code, err)
    assert "Traceback" not in err
    return err
