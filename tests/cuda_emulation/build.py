"""Compile a CUDA source as host C++ against shim.h and launch its kernels with checked arguments.

``Module(code)`` finds every ``extern "C" __global__`` kernel in the preprocessed source (its name,
``__launch_bounds__`` and C parameter list), appends one small C++ entry point per kernel, and builds a
shared object with the system ``g++``. The object is cached by the hash of everything that goes into it
(``$MINSEG_CUDA_EMULATION_CACHE``, default ``<tmp>/minseg-cuda-emulation``), so a test run compiles
each kernel file once.

``Module.launch(name, grid, block, args)`` converts each argument as CuPy's RawKernel does
(``cupy/cuda/function.pyx`` ``_pointer``, ``cupy/_core/_scalar.pyx``): an array passes its data
pointer, a NumPy scalar its own bytes, a Python int as int64, a float as float64, a bool as one byte,
None a null pointer. Where CuPy would pass bytes of the wrong size or kind for the C parameter (the
classic: a Python int for an ``int``, 8 bytes where the kernel reads 4), this raises ``TypeError``.
"""
import ctypes
import hashlib
import os
import pathlib
import platform
import re
import subprocess
import tempfile

import numpy as np

SHIM = pathlib.Path(__file__).resolve().parent / "shim.h"
COMPILER = ("g++", "-std=c++17", "-O2", "-march=native", "-fPIC", "-shared", "-w")
_KERNEL = re.compile(r'extern\s+"C"\s+EMU_GLOBAL\s+void\s+(?:EMU_LAUNCH_BOUNDS\s*\(\s*(\d+)[^)]*\)\s*)?'
                     r'(\w+)\s*\(([^)]*)\)')
# The C scalar types a kernel parameter may have, and the NumPy dtype whose bytes it reads.
C_SCALARS = {"int": np.int32, "unsigned int": np.uint32, "unsigned": np.uint32, "long long": np.int64,
             "long long int": np.int64, "unsigned long long": np.uint64, "float": np.float32,
             "double": np.float64, "bool": np.bool_, "char": np.int8, "short": np.int16, "size_t": np.uint64}


def cache_dir():
    default = pathlib.Path(tempfile.gettempdir()) / "minseg-cuda-emulation"
    return pathlib.Path(os.environ.get("MINSEG_CUDA_EMULATION_CACHE", default))


class Parameter:
    """One C parameter: ``const float* __restrict__ x`` -> pointer to float32, named x."""

    def __init__(self, text):
        words = text.replace("*", " * ").replace("__restrict__", " ").split()
        self.name = words[-1]
        self.pointer = "*" in words
        base = " ".join(w for w in words[:-1] if w not in ("const", "*", "volatile"))
        if base not in C_SCALARS:
            raise TypeError(f"cuda_emulation: parameter type {text!r} is not one the emulation knows")
        self.dtype = np.dtype(C_SCALARS[base])
        self.c_type = " ".join(words[:-1])
        self.text = " ".join(text.split())


class Kernel:
    def __init__(self, name, max_threads, parameters):
        self.name, self.max_threads = name, max_threads
        self.parameters = [Parameter(p) for p in parameters.split(",") if p.strip()]


def _preprocess(code):
    """The source after the preprocessor, with __global__ and __launch_bounds__ left as markers."""
    result = subprocess.run(["g++", "-std=c++17", "-E", "-P", "-x", "c++", "-include", str(SHIM),
                             "-DEMU_FIND_KERNELS", "-"], input=code, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"cuda_emulation: the preprocessor failed:\n{result.stderr}")
    return result.stdout


def _entry_points(kernels):
    """C++ appended to the source: per kernel, a body that unpacks void* args and a launch function."""
    lines = []
    for kernel in kernels:
        unpack = ", ".join(f"*({p.c_type}*)a[{i}]" for i, p in enumerate(kernel.parameters))
        lines += [f"static void emu_body_{kernel.name}(void** a) {{ {kernel.name}({unpack}); }}",
                  f'extern "C" int emu_launch_{kernel.name}(const unsigned* g, const unsigned* b, void** a, '
                  f"const uintptr_t* r, int n) {{ return emu_launch(g, b, emu_body_{kernel.name}, a, r, n); }}"]
    return "\n".join(lines) + "\n"


def _host():
    """What -march=native compiles for: the machine and its CPU flags (a cached object must not move to a
    CPU without them)."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return f"{platform.machine()} {flags}"


def _build(code, kernels):
    glue = _entry_points(kernels)
    inputs = [SHIM.read_text(), code, glue, " ".join(COMPILER), _host()]
    key = hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:24]
    library = cache_dir() / f"{key}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as work:
            source = pathlib.Path(work) / "kernels.cpp"
            source.write_text(f'#include "{SHIM}"\n{code}\n{glue}')
            built = pathlib.Path(work) / "kernels.so"
            result = subprocess.run(list(COMPILER) + [str(source), "-o", str(built)], capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"cuda_emulation: g++ failed:\n{result.stderr[-4000:]}")
            os.replace(built, library)  # atomic: a concurrent run sees the old file or the whole new one
    loaded = ctypes.CDLL(str(library))
    shared = _shared_variables(library, loaded)
    loaded.emu_set_shared((ctypes.c_size_t * max(1, len(shared)))(*shared), len(shared) // 2)
    return loaded


def _shared_variables(library, loaded):
    """[begin, end, ...] of every function-local static (``_ZZ`` symbol) in ``library``, as loaded.

    Device code cannot have any static but ``__shared__`` (and the shim has no function-local statics),
    so these are exactly the kernels' shared memory.
    """
    listing = subprocess.run(["nm", "-S", "--defined-only", str(library)], capture_output=True, text=True,
                             check=True).stdout
    symbols = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4:
            symbols[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
    base = ctypes.addressof(ctypes.c_char.in_dll(loaded, "emu_error")) - symbols["emu_error"][0]
    ranges = []
    for name, (address, size) in sorted(symbols.items()):
        if name.startswith("_ZZ"):
            ranges += [base + address, base + address + size]
    if len(ranges) > 128:
        raise RuntimeError("cuda_emulation: more than 64 __shared__ variables; raise the limit in shim.h")
    return ranges


class Module:
    """A .cu source built for the CPU; ``kernels`` maps each name to its parsed signature."""

    def __init__(self, code):
        found = _KERNEL.findall(_preprocess(code))
        self.kernels = {name: Kernel(name, int(bounds) if bounds else 1024, params) for bounds, name, params in found}
        self._library = _build(code, list(self.kernels.values()))

    def launch(self, name, grid, block, args, pointer_of):
        """Run kernel ``name``; ``pointer_of(array)`` gives (data pointer, nbytes) for GPU arrays or None."""
        kernel = self.kernels[name]
        grid, block = _dims(name, "grid", grid), _dims(name, "block", block)
        threads = block[0] * block[1] * block[2]
        if threads > kernel.max_threads:
            raise RuntimeError(f"{name}: launched with {threads} threads per block, above its "
                               f"__launch_bounds__({kernel.max_threads}) (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)")
        if grid[1] > 65535 or grid[2] > 65535 or grid[0] >= 2**31:
            raise RuntimeError(f"{name}: grid {grid} exceeds CUDA's limits (CUDA_ERROR_INVALID_VALUE)")
        if len(args) != len(kernel.parameters):
            raise TypeError(f"{name}: takes {len(kernel.parameters)} arguments, got {len(args)}")
        storage, ranges = [], []
        for index, (parameter, value) in enumerate(zip(kernel.parameters, args)):
            raw, extent = _convert(name, index, parameter, value, pointer_of)
            storage.append(raw)
            ranges += extent
        pointers = (ctypes.c_void_p * len(storage))(*[ctypes.cast(ctypes.pointer(s), ctypes.c_void_p) for s in storage])
        status = getattr(self._library, f"emu_launch_{name}")(
            (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), pointers,
            (ctypes.c_size_t * max(1, len(ranges)))(*ranges), len(ranges) // 2)
        if status:
            message = ctypes.c_char.in_dll(self._library, "emu_error")
            text = ctypes.string_at(ctypes.addressof(message)).decode(errors="replace")
            raise RuntimeError(f"{name}: {text}")


def _dims(name, what, value):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(value) <= 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in value):
        raise TypeError(f"{name}: {what} must be 1 to 3 positive ints, got {value!r}")
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


def _convert(name, index, parameter, value, pointer_of):
    """The ctypes storage CuPy would pass for ``value``, after checking it against ``parameter``."""
    where = f"{name}: argument {index} ({parameter.text})"
    located = pointer_of(value)
    if parameter.pointer:
        if value is None:
            return ctypes.c_void_p(0), []
        if located is None:
            raise TypeError(f"{where} must be a GPU array, got {type(value).__name__}; CuPy would pass "
                            "its bytes by value (or refuse a NumPy array of more than one element)")
        if value.dtype != parameter.dtype:
            raise TypeError(f"{where} points to {parameter.dtype.name}, got an array of {value.dtype}")
        pointer, nbytes = located
        return ctypes.c_void_p(pointer), [pointer, pointer + nbytes]
    if located is not None or isinstance(value, np.ndarray) and value.size != 1:
        raise TypeError(f"{where} is passed by value, got an array of shape {getattr(value, 'shape', '?')}")
    sent = _cupy_scalar_dtype(value)
    if sent is None:
        raise TypeError(f"{where}: CuPy cannot pass a {type(value).__name__}")
    if sent != parameter.dtype:
        raise TypeError(f"{where}: CuPy passes this {type(value).__name__} as {sent.name} ({sent.itemsize} bytes) "
                        f"but the kernel reads {parameter.dtype.name} ({parameter.dtype.itemsize} bytes); "
                        f"pass np.{parameter.dtype.name}(...)")
    scalar = np.asarray(value, dtype=sent).reshape(1)
    return (ctypes.c_char * sent.itemsize).from_buffer_copy(scalar.tobytes()), []


def _cupy_scalar_dtype(value):
    """The dtype CuPy gives a scalar kernel argument (``numpy_dtype_from_pyscalar``), None if it has none."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.dtype
    kind = type(value)
    if kind is bool:
        return np.dtype(np.bool_)
    if kind is float:
        return np.dtype(np.float64)
    if kind is int:
        return np.dtype(np.uint64 if value >= 2**63 else np.int64)
    return None
