"""Getting a kernel onto the GPU: find the ``.cu`` sources, compile them, check the arrays, launch.

The ``.cu`` files are compiled from source by ``cupy.RawModule`` (NVRTC) the first time a kernel is
needed, once per file per process and device (CuPy also caches the binary on disk); the module, each
kernel object and the device's multiprocessor count are cached here, and kernels launch on the device
that holds their arrays. CuPy is imported only inside these functions, so ``import minseg`` never
needs it.
"""
import functools
import pathlib

import numpy as np

from .. import backend

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent  # minseg/
# An installed wheel carries the sources as package data (minseg/kernels/*.cu, see setup.cfg);
# a source checkout keeps them in the repository's top-level kernels/, next to the package.
_KERNEL_DIRS = (_PACKAGE_DIR / "kernels", _PACKAGE_DIR.parent / "kernels")
_COMPILE_OPTIONS = ("-std=c++17",)  # CuPy adds -ftz=true and -arch=sm_<cc> (tests/cuda_emulation/resources.py)
_MAX_ELEMENTS = 2**31 - 1  # the conv kernels index with 32-bit ints


# --- finding, compiling and launching kernels ----------------------------------------------------
def kernel_dir():
    """The folder holding the .cu sources (installed package data first, then the checkout)."""
    for folder in _KERNEL_DIRS:
        if folder.is_dir() and any(folder.glob("*.cu")):
            return folder
    searched = ", ".join(str(folder) for folder in _KERNEL_DIRS)
    raise FileNotFoundError(f"minseg.cuda: no CUDA kernel sources (*.cu) found; looked in {searched}")


def kernel_sources():
    """Paths of every CUDA source file, sorted."""
    return sorted(kernel_dir().glob("*.cu"))


@functools.lru_cache(maxsize=None)
def _cupy():
    return backend._import_cupy()  # raises a RuntimeError saying what to install


@functools.lru_cache(maxsize=None)
def _module(stem, device_id):
    """``kernels/<stem>.cu`` compiled for device ``device_id`` (call inside ``with device:``)."""
    source = (kernel_dir() / f"{stem}.cu").read_text()
    module = _cupy().RawModule(code=source, options=_COMPILE_OPTIONS)
    module.compile()  # now, so that a missing CUDA toolkit shows here and not at some later launch
    return module


@functools.lru_cache(maxsize=None)
def _kernel(stem, name, device_id):
    """The compiled kernel ``name`` of ``kernels/<stem>.cu`` on device ``device_id``.

    Cached: CuPy's RawModule.get_function builds a new RawKernel object on every call.
    """
    return _module(stem, device_id).get_function(name)


@functools.lru_cache(maxsize=None)
def _multiprocessor_count(device_id):
    return int(_cupy().cuda.Device(device_id).attributes["MultiProcessorCount"])


def _launch(stem, name, grid, block, args):
    """Launch on the device that holds the first argument (every array argument is on it)."""
    device = args[0].device
    with device:
        _kernel(stem, name, device.id)(grid, block, args)


# --- the arrays handed to a kernel -------------------------------------------------------------
def _check_array(where, name, array, dtype, ndim=None):
    """``array`` as a C-contiguous CuPy array of ``dtype``, or an error naming ``name``."""
    cp = _cupy()
    if not isinstance(array, cp.ndarray):
        raise TypeError(f"{where}: {name} must be a CuPy array on the GPU, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{where}: {name} must be {np.dtype(dtype).name} (the CUDA kernels are "
                        f"{np.dtype(dtype).name} only), got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{where}: {name} must have {ndim} dimensions, got shape {tuple(array.shape)}")
    if array.size > _MAX_ELEMENTS:
        raise ValueError(f"{where}: {name} has {array.size} elements; the kernels handle at most {_MAX_ELEMENTS}")
    if array.flags.c_contiguous:
        return array
    with array.device:
        return cp.ascontiguousarray(array)


def _output(where, out, shape, like, name="out"):
    """A fresh float32 array of ``shape`` on ``like``'s device, or ``out`` once checked (tests pass NaN-filled
    ones)."""
    cp = _cupy()
    if out is None:
        with like.device:
            return cp.empty(shape, dtype=np.float32)
    if not isinstance(out, cp.ndarray) or out.dtype != np.float32 or tuple(out.shape) != tuple(shape) \
            or not out.flags.c_contiguous:
        found = (f"{type(out).__name__} {getattr(out, 'dtype', '')} {tuple(getattr(out, 'shape', ()))}"
                 f"{'' if getattr(out, 'flags', None) is None or out.flags.c_contiguous else ' non-contiguous'}")
        raise ValueError(f"{where}: {name} must be a C-contiguous float32 CuPy array of shape {tuple(shape)}, "
                         f"got {found}")
    if out.size > _MAX_ELEMENTS:
        raise ValueError(f"{where}: {name} has {out.size} elements; the kernels handle at most {_MAX_ELEMENTS}")
    return out
