"""NumPy or CuPy: the one place that decides which array library runs an op.

Every op receives raw arrays and asks ``get_array_module(x)`` for the module that
owns them, so the same line of code runs on the CPU (NumPy) or on an NVIDIA GPU
(CuPy). CuPy is imported only when a GPU array or device is actually asked for, so
``import minseg`` never needs it.
"""
import numpy as np

__all__ = ["get_array_module", "device_of", "to_device", "check_same_device", "cupy_available"]

DEVICES = ("cpu", "cuda")

_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. pip install 'minseg[gpu]' "
    "(cupy-cuda12x) or pip install cupy-cuda13x for CUDA 13, on a machine with an NVIDIA GPU"
)


def _is_cupy_array(array):
    # Looking at the type's module avoids importing CuPy just to answer "no".
    return type(array).__module__.split(".")[0] == "cupy"


def _import_cupy():
    """Return the cupy module, or raise an error saying what to install."""
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(f"device 'cuda' needs CuPy, which is not installed: {_INSTALL_HINT}") from error
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own CUDARuntimeError without a driver
        raise RuntimeError(f"device 'cuda': CuPy is installed but found no usable GPU ({error}); "
                           f"{_INSTALL_HINT}") from error
    if n_devices == 0:
        raise RuntimeError(f"device 'cuda': CuPy is installed but found no GPU; {_INSTALL_HINT}")
    return cupy


def cupy_available():
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def get_array_module(*arrays):
    """The array library (numpy or cupy) that owns ``arrays``; NumPy when none is a GPU array."""
    for array in arrays:
        if _is_cupy_array(array):
            import cupy
            return cupy
    return np


def device_of(array):
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    return "cuda" if _is_cupy_array(array) else "cpu"


def to_device(array, device):
    """Copy ``array`` to ``device`` ('cpu' or 'cuda'); returns it unchanged when it is already there."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == device_of(array):
        return array
    if device == "cpu":
        return array.get()
    return _import_cupy().asarray(array)


def check_same_device(arrays, op_name):
    """Raise a clear error when ``arrays`` mix CPU and GPU memory."""
    devices = {device_of(a) for a in arrays}
    if len(devices) > 1:
        found = ", ".join(f"{device_of(a)} {tuple(a.shape)}" for a in arrays)
        raise RuntimeError(
            f"{op_name}: all tensors must be on the same device, got {found}; "
            "move them with .to('cpu') or .to('cuda') first")
