"""A stand-in for CuPy on a CPU: NumPy arrays of a "device" subclass that record every host
synchronisation the code would cause on a real GPU (tests/test_gpu_route.py installs it as the
backend's CuPy).

On a GPU, the host queues kernels and goes on; it waits for the device only where it needs a
value or a size that the device computes. Those places, recorded as (kind, what) in `EVENTS`:

    scalar    a device value read on the host: float(), int(), bool(), operator.index, .item(),
              .tolist(), format() (an f-string), str() and repr()
    mask      boolean-mask indexing, x[mask] or x[mask] = v (CuPy counts the mask on the host)
    size      outputs whose size depends on the data: nonzero, unique, argwhere, flatnonzero,
              compress, extract
    numpy     a NumPy function or ufunc applied to a device array from outside this module
              (np.exp(x), np.pad(x), np.asarray(x)): CuPy refuses or copies to the host
    mix       a host NumPy array in an operation with device arrays (CuPy raises)
    numba     a Numba kernel called with a device array (the GPU route must not reach one)
    to_host   an explicit copy to the host (asnumpy, .get()): right at a boundary, a wait
              inside a training step

What such a stand-in cannot see: synchronisations inside CuPy and the CUDA driver (a memory
pool growing, a pageable host-to-device copy, cuBLAS handle creation), races between streams,
the numerics of cuBLAS and cuDNN, and CuPy functions whose signature or semantics differ from
NumPy's (it runs NumPy underneath). benchmarks/gpu_check.py measures those on a real GPU.

Like CuPy: reductions and indexing give 0-d device arrays, not Python or NumPy scalars;
`random.default_rng` gives a generator whose bit generator's `state` is a method, not a dict,
and that cannot be pickled.
"""
import contextlib
import threading
import types

import numpy as np

EVENTS = []
_local = threading.local()
SIZE_DEPENDENT = {"nonzero", "unique", "argwhere", "flatnonzero", "compress", "extract"}


def record(kind, what):
    if not _inside():
        EVENTS.append((kind, what))


def _inside():
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def _device_call():
    """CuPy's own work: nothing inside records (NumPy computes it, as the GPU would)."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def _is_host_array(a):
    return isinstance(a, np.ndarray) and not isinstance(a, ndarray)


def _check_mix(what, values):
    for a in values:
        if _is_host_array(a):
            record("mix", f"{what}: a host array {a.shape} with device arrays")
        elif isinstance(a, (list, tuple)):
            _check_mix(what, a)


def _device(out):
    """Results as device arrays: arrays viewed as `ndarray`, NumPy scalars as 0-d arrays."""
    if isinstance(out, ndarray):
        return out
    if isinstance(out, np.ndarray):
        return out.view(ndarray)
    if isinstance(out, np.generic):
        return np.asarray(out).view(ndarray)
    if isinstance(out, tuple):
        return tuple(_device(o) for o in out)
    if isinstance(out, list):
        return [_device(o) for o in out]
    return out


class ndarray(np.ndarray):
    """A device array: a NumPy array that records what would make a GPU's host wait."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        record("numpy", f"np.{ufunc.__name__} on a device array")
        with _device_call():
            args = [a._host() if isinstance(a, ndarray) else a for a in inputs]
            out = kwargs.get("out")
            if out:
                kwargs["out"] = tuple(o._host() if isinstance(o, ndarray) else o
                                      for o in out)
            result = getattr(ufunc, method)(*args, **kwargs)
            return out[0] if out and len(out) == 1 else _device(result)

    def __array_function__(self, func, types, args, kwargs):
        record("numpy", f"np.{func.__name__} on a device array")
        with _device_call():
            return _device(super().__array_function__(func, types, args, kwargs))

    def __array__(self, dtype=None, copy=None):
        record("numpy", "a device array converted to NumPy (np.asarray)")
        a = self._host()
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, index):
        _check_index(index)
        with _device_call():
            return _device(super().__getitem__(index))

    def __setitem__(self, index, value):
        _check_index(index)
        _check_mix("x[...] = v", [value])
        with _device_call():
            super().__setitem__(index, value)

    def _host(self):
        """The same memory as a plain NumPy array (the stand-in's own access, not a copy)."""
        return np.ndarray.view(self, np.ndarray)

    def get(self):
        record("to_host", "ndarray.get()")
        return self._host().copy()


def _check_index(index):
    for i in index if isinstance(index, tuple) else (index,):
        if isinstance(i, np.ndarray) and i.dtype == bool and i.ndim > 0:
            record("mask", f"boolean-mask indexing with a mask of shape {i.shape}")


def _operator(name):
    base = getattr(np.ndarray, name)

    def op(self, *args, **kwargs):
        _check_mix(f"ndarray.{name}", list(args) + list(kwargs.values()))
        with _device_call():
            return _device(base(self, *args, **kwargs))
    op.__name__ = name
    return op


_OPERATORS = [f"__{p}{o}__" for o in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                       "matmul", "and", "or", "xor", "lshift", "rshift")
              for p in ("", "r", "i")] + [f"__{o}__" for o in ("lt", "le", "gt", "ge", "eq", "ne",
                                                                "neg", "pos", "abs", "invert")]
_METHODS = ["sum", "max", "min", "mean", "std", "var", "prod", "any", "all", "argmax", "argmin",
            "astype", "copy", "reshape", "ravel", "flatten", "transpose", "swapaxes", "squeeze",
            "fill", "clip", "cumsum", "dot", "take", "repeat", "round", "sort",
            "argsort"]
for _name in _OPERATORS + _METHODS:
    setattr(ndarray, _name, _operator(_name))


def _host_value(name):
    base = getattr(np.ndarray, name)

    def read(self, *args):
        record("scalar", f"{name} of a device array")
        with _device_call():
            return base(self._host(), *args)
    read.__name__ = name
    return read


for _name in ("__float__", "__int__", "__bool__", "__index__", "__complex__", "item", "tolist",
              "__format__", "__str__", "__repr__"):
    setattr(ndarray, _name, _host_value(_name))


def _nonzero(self):
    record("size", "ndarray.nonzero")
    with _device_call():
        return _device(np.ndarray.nonzero(self))


ndarray.nonzero = _nonzero


def _function(name, fn):
    def call(*args, **kwargs):
        _check_mix(f"cupy.{name}", list(args) + list(kwargs.values()))
        if name in SIZE_DEPENDENT:
            record("size", f"cupy.{name}")
        with _device_call():
            return _device(fn(*args, **kwargs))
    call.__name__ = name
    return call


class _Module(types.ModuleType):
    """A module whose functions are NumPy's (or `source`'s), returning device arrays."""

    def __init__(self, name, source, extra=None):
        super().__init__(name)
        self._source, self._extra = source, extra or {}

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._extra:
            return self._extra[name]
        value = getattr(self._source, name)
        if callable(value) and not isinstance(value, type):
            return _function(name, value)
        return value                                   # dtypes, constants


def asarray(a, dtype=None):
    """A host-to-device copy (a device array is returned as it is)."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype)
    with _device_call():
        return np.array(a, dtype=dtype).view(ndarray)


def asnumpy(a):
    record("to_host", "cupy.asnumpy")
    return np.array(a._host() if isinstance(a, ndarray) else a)


class _BitGenerator:
    def state(self):                                   # CuPy's: a method, not a dict
        raise NotImplementedError("cupy's bit generator has no NumPy-style state")


class Generator:
    """CuPy's generator: random numbers on the device; it cannot be pickled (a lock)."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.bit_generator = _BitGenerator()

    def random(self, size=None, dtype=np.float64):
        with _device_call():
            return _device(self._rng.random(size, dtype=dtype))

    def standard_normal(self, size=None, dtype=np.float64):
        with _device_call():
            return _device(self._rng.standard_normal(size, dtype=dtype))


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1


class _Device:
    def __init__(self, i=0):
        self.id = i

    def synchronize(self):
        pass


cuda = types.SimpleNamespace(runtime=_Runtime(), Device=_Device)
random = types.SimpleNamespace(default_rng=lambda seed=None: Generator(seed))
linalg = _Module("fake_cupy.linalg", np.linalg)


def make_module():
    """A fresh stand-in module named like CuPy's top level."""
    return _Module("cupy", np, dict(ndarray=ndarray, asarray=asarray, asnumpy=asnumpy, cuda=cuda,
                                    random=random, linalg=linalg))
