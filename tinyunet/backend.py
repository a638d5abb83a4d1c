"""The NumPy/CuPy switch. This is the only module in tinyunet that imports CuPy.

Every op asks ``get_array_module(x)`` for the array module of its input, so one code path serves
the CPU (NumPy) and the GPU (CuPy). Devices are named ``"cpu"`` and ``"gpu"``; the default comes
from the ``TINYUNET_DEVICE`` environment variable, else ``"cpu"``. Scratch memory that ops reuse
across calls is a ``Workspace`` on one device. (Which implementation of the hot ops runs, the
engine, is chosen in engine.py.)
"""
import functools
import os

import numpy as np

try:  # CuPy is optional: `pip install tinyunet[cuda12]` (or cuda13) brings it.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy whose CUDA libraries are missing
    _cupy = None

DEVICES = ("cpu", "gpu")


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device (asked once per process)."""
    return _cupy is not None and _device_count(_cupy) > 0


@functools.lru_cache(maxsize=None)
def _device_count(cupy):
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no driver, no device
        return 0


def resolve_device(device=None):
    """Return "cpu" or "gpu" for `device` (None: $TINYUNET_DEVICE, else "cpu").

    Asking for the GPU where there is none is a RuntimeError that says why, here, rather than a
    crash deep inside an op later.
    """
    if device is None:
        device = os.environ.get("TINYUNET_DEVICE", "cpu")
    name = str(device).lower()
    if name in ("cuda", "cupy"):
        name = "gpu"
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}: valid devices are 'cpu' and 'gpu'")
    if name == "gpu" and not gpu_available():
        why = ("CuPy is not installed (pip install 'tinyunet[cuda12]' or 'tinyunet[cuda13]')"
               if _cupy is None else "CuPy is installed but sees no CUDA device")
        raise RuntimeError(f"device 'gpu' was requested but {why}; use device='cpu'")
    return name


def xp_for(device=None):
    """The array module (numpy or cupy) for a device name."""
    return _cupy if resolve_device(device) == "gpu" else np


def get_array_module(x):
    """numpy for NumPy arrays (and anything else), cupy for CuPy arrays."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy
    return np


def device_of(x):
    """"gpu" for a CuPy array, "cpu" otherwise."""
    return "gpu" if get_array_module(x) is not np else "cpu"


def to_device(x, device):
    """Copy an array to `device` ("cpu" or "gpu"); a no-op if it is already there."""
    if resolve_device(device) == "gpu":
        return _cupy.asarray(x)
    return to_numpy(x)


def to_numpy(x):
    """A NumPy array from a NumPy or CuPy array (the explicit device-to-host boundary)."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return np.asarray(x)


class CounterRNG:
    """Uniform random numbers in [0, 1) made from a counter: the same numbers on NumPy and
    CuPy, computed on the array's own device, and a state of two integers (seed, draws) that a
    checkpoint keeps as JSON and a pickle carries.

    Draw k of a generator with seed s gives element i of an array the value
        u_i = (mix(key_k + (i + 1) * G) >> 11) * 2^-53,   key_k = mix(s * 2^32 + k),
    mix being SplitMix64's finaliser (Steele, Lea and Flood, OOPSLA 2014; G its golden-ratio
    increment): a counter-based generator, as Philox is, so no draw depends on another and the
    array module needs only integer arithmetic modulo 2^64, which NumPy and CuPy share.
    """
    _G, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB

    def __init__(self, seed=0):
        self.seed, self.draws = int(seed), 0

    @property
    def state(self):
        return {"seed": self.seed, "draws": self.draws}

    @state.setter
    def state(self, state):
        self.seed, self.draws = int(state["seed"]), int(state["draws"])

    @classmethod
    def _mix(cls, z, xp=None):
        """SplitMix64's finaliser of a Python int (xp None) or of a uint64 array."""
        if xp is None:
            m = (1 << 64) - 1
            z = ((z ^ (z >> 30)) * cls._M1) & m
            z = ((z ^ (z >> 27)) * cls._M2) & m
            return z ^ (z >> 31)
        z = (z ^ (z >> xp.uint64(30))) * xp.uint64(cls._M1)
        z = (z ^ (z >> xp.uint64(27))) * xp.uint64(cls._M2)
        return z ^ (z >> xp.uint64(31))

    def random(self, shape, dtype="float64", xp=np):
        """An array of `shape` on xp's device (numpy or cupy) of uniform values in [0, 1)."""
        key = self._mix(((self.seed << 32) + self.draws) & ((1 << 64) - 1))
        self.draws += 1
        n = int(np.prod(shape))
        i = xp.arange(1, n + 1, dtype=xp.uint64)
        z = self._mix(i * xp.uint64(self._G) + xp.uint64(key), xp)
        u = (z >> xp.uint64(11)).astype(xp.float64) * (2.0 ** -53)
        return u.reshape(shape).astype(dtype, copy=False)


class Workspace:
    """Scratch memory kept across calls: one flat buffer on one device, grown to the largest
    request and handed out again (``take``). The ops whose temporaries outgrow their output (the
    im2col columns, the kernels' bands) take one; a model owns one for all its layers.

    Large arrays come straight from the OS, which zero-fills every page on first touch; reusing
    one buffer spares that in every layer of every step (CuPy pools memory anyway).
    """

    def __init__(self, device="cpu"):
        self.device = device
        self._buffer = None

    def take(self, size, dtype):
        """A flat array of `size` elements of `dtype`, valid until the next take()."""
        buf = self._buffer
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._buffer = xp_for(self.device).empty(size, dtype=dtype)
        return buf[:size]


def scratch(workspace, size, dtype, xp=np):
    """workspace.take(size, dtype), or a fresh array without a workspace."""
    return xp.empty(size, dtype=dtype) if workspace is None else workspace.take(size, dtype)
