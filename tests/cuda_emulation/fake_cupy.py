"""The piece of CuPy that minseg touches, on the CPU: installed as ``sys.modules["cupy"]`` by install().

- ``ndarray`` is a NumPy subclass whose type lives in module ``cupy``, so ``backend.get_array_module``
  takes the GPU route. Arrays made here (``empty``, ``zeros``, ``full``, ``asarray`` ...) start on a
  256-byte boundary, as CuPy's allocator gives, and sit between two 256-byte guard bands that every
  launch checks afterwards: a kernel that writes just outside an array fails the test.
- ``RawModule(code=..., options=...)`` builds the source with build.py; ``get_function(name)`` returns a
  ``RawKernel`` whose call ``kernel(grid, block, args)`` checks every argument against the C signature.
- ``cuda.runtime.getDeviceCount``, ``cuda.Device`` (``attributes["MultiProcessorCount"]``, a context
  manager) and ``cuda.Event`` stand in for one device with DEVICE_ATTRIBUTES.
- Any other name (``cupy.exp``, ``cupy.where`` ...) is NumPy's, with array results viewed as ``ndarray``.

Unlike CuPy, NumPy functions accept these arrays silently (it is a subclass), so code that mixes host
and device arrays by mistake passes here; docs/gpu.md lists this with the emulation's other limits.
"""
import sys
import time
import types

import numpy as np

from . import build

ALIGNMENT = 256  # CuPy's memory pool hands out 256-byte aligned blocks
GUARD = 256      # bytes of canary on each side of an allocation
_CANARY = 0xA5
DEVICE_ATTRIBUTES = {"MultiProcessorCount": 132, "MaxThreadsPerBlock": 1024, "WarpSize": 32}
COMPUTE_CAPABILITY = "90"


# --- arrays ------------------------------------------------------------------------------------
class ndarray(np.ndarray):
    """A NumPy array that minseg takes for a CuPy one."""

    def __array_finalize__(self, obj):
        self._guarded = getattr(obj, "_guarded", None)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def device(self):
        return cuda.Device(0)

    def get(self):
        return np.array(self.view(np.ndarray), copy=True)

    def __repr__(self):
        return "fake cupy " + repr(self.view(np.ndarray))


ndarray.__module__ = "cupy"


def _allocate(shape, dtype):
    """An uninitialised ndarray in a fresh buffer: 256-byte aligned, canaries on both sides."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 2 * GUARD + ALIGNMENT, dtype=np.uint8)
    start = GUARD + (-(raw.ctypes.data + GUARD)) % ALIGNMENT
    raw[:start] = _CANARY
    raw[start + nbytes:] = _CANARY
    array = raw[start:start + nbytes].view(dtype).reshape(shape).view(ndarray)
    array._guarded = (raw, start, nbytes)
    return array


def check_guards(array):
    """Raise if anything wrote into the canary bytes around ``array``'s buffer."""
    guarded = getattr(array, "_guarded", None)
    if guarded is None:
        return
    raw, start, nbytes = guarded
    if (raw[:start] != _CANARY).any() or (raw[start + nbytes:] != _CANARY).any():
        raise RuntimeError("a kernel wrote outside an array: the guard bytes around it changed")


def empty(shape, dtype=np.float64, order="C"):
    return _allocate(shape, dtype)


def full(shape, fill_value, dtype=None):
    array = _allocate(shape, np.result_type(fill_value) if dtype is None else dtype)
    array[...] = fill_value
    return array


def zeros(shape, dtype=np.float64):
    return full(shape, 0, dtype)


def ones(shape, dtype=np.float64):
    return full(shape, 1, dtype)


def empty_like(a, dtype=None):
    return empty(np.shape(a), a.dtype if dtype is None else dtype)


def zeros_like(a, dtype=None):
    return zeros(np.shape(a), a.dtype if dtype is None else dtype)


def ones_like(a, dtype=None):
    return ones(np.shape(a), a.dtype if dtype is None else dtype)


def full_like(a, fill_value, dtype=None):
    return full(np.shape(a), fill_value, a.dtype if dtype is None else dtype)


def array(obj, dtype=None, copy=True):
    source = np.asarray(obj, dtype=dtype)
    result = _allocate(source.shape, source.dtype)
    result[...] = source
    return result


def asarray(obj, dtype=None):
    if isinstance(obj, ndarray) and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    return array(obj, dtype)


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype)
    return a if a.flags.c_contiguous else array(a)


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*arrays):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else np


def _on_device(value):
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        return value.view(ndarray)
    if isinstance(value, tuple):
        return tuple(_on_device(v) for v in value)
    if isinstance(value, list):
        return [_on_device(v) for v in value]
    return value


def __getattr__(name):
    """Everything else is NumPy's: functions return ndarrays; ufuncs, dtypes and constants as they are."""
    value = getattr(np, name)
    if isinstance(value, (type, np.ufunc, types.ModuleType)) or not callable(value):
        return value

    def on_device(*args, **kwargs):
        return _on_device(value(*args, **kwargs))
    on_device.__name__ = name
    return on_device


# --- kernels -----------------------------------------------------------------------------------
def _pointer_of(value):
    if isinstance(value, ndarray):
        return value.ctypes.data, value.size * value.itemsize
    return None


class RawKernel:
    def __init__(self, module, name):
        if name not in module.kernels:
            raise KeyError(f"CUDA_ERROR_NOT_FOUND: no kernel named {name!r} "
                           f"(the source defines {sorted(module.kernels)})")
        self._module, self.name = module, name
        self.launches = 0

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: CuPy wants the kernel arguments as a tuple, got {type(args).__name__}")
        self._module.launch(self.name, grid, block, args, _pointer_of)
        self.launches += 1
        for value in args:
            check_guards(value)


class RawModule:
    built = 0  # how many RawModules were made in this process (minseg.cuda caches them)

    def __init__(self, *, code=None, path=None, options=(), backend="nvrtc", **unused):
        if code is None:
            raise NotImplementedError("the emulation builds RawModule(code=...) only")
        self.code, self.options = code, tuple(options)
        self._module = build.Module(code)
        RawModule.built += 1

    def compile(self, log_stream=None):
        pass  # built in __init__

    def get_function(self, name):
        return RawKernel(self._module, name)


# --- the device --------------------------------------------------------------------------------
class _Device:
    _current = [0]

    def __init__(self, device=None):
        self.id = int(self._current[0] if device is None else device)
        if self.id != 0:
            raise RuntimeError(f"CUDA_ERROR_INVALID_DEVICE: the emulation has device 0 only, got {self.id}")
        self.attributes = dict(DEVICE_ATTRIBUTES)
        self.compute_capability = COMPUTE_CAPABILITY

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return self

    def synchronize(self):
        pass

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


class _Event:
    def __init__(self, *args, **kwargs):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed_ms(start, end):
    return (end.time - start.time) * 1e3


cuda = types.SimpleNamespace(
    Device=_Device, Event=_Event, get_elapsed_time=_elapsed_ms,
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
)
__version__ = "0.0-cuda-emulation"
