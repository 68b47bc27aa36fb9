"""Registers and spills of every kernel, compiled the way CuPy's RawModule compiles them.

CuPy (v13.6, v14.2: ``cupy/_core/core.pyx`` ``assemble_cupy_compiler_options`` and
``cupy/cuda/compiler.py`` ``_compile_with_cache_cuda`` / ``_compile_using_nvrtc_no_warning``) hands NVRTC
the caller's options plus ``-I`` the CUDA headers, ``-ftz=true``, ``-arch=sm_<cc>`` (a cubin) and
``--device-as-default-execution-space``. This script adds only ``-Xptxas=-v`` so that ptxas reports what
it allocated. It needs NVRTC (``pip install cuda-bindings nvidia-cuda-nvrtc``), not a GPU::

    python -m tests.cuda_emulation.resources --arch sm_90

With ``--loaded`` it instead asks the driver about each kernel as ``minseg.cuda`` loaded it through CuPy
(registers, local memory per thread where spills live, static shared memory): the GPU's own view, so it
needs one (under the CPU emulation these attributes do not exist and print as ``-``)::

    python -m tests.cuda_emulation.resources --loaded
"""
import argparse
import re
import sys

from minseg import cuda


def cupy_options(arch, include_dir):
    """CuPy's NVRTC options for ``RawModule(code, options=minseg.cuda.launch._COMPILE_OPTIONS)`` on ``arch``."""
    options = list(cuda.launch._COMPILE_OPTIONS) + [f"-I{include_dir}", "-ftz=true", f"-arch={arch}",
                                              "--device-as-default-execution-space"]
    return options


def ptxas_report(source, name, options):
    """NVRTC's log (ptxas -v lines) for one source."""
    from cuda.bindings import nvrtc
    error, program = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, error
    (error,) = nvrtc.nvrtcCompileProgram(program, len(options) + 1,
                                         [o.encode() for o in options] + [b"-Xptxas=-v"])
    _, size = nvrtc.nvrtcGetProgramLogSize(program)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(program, log)
    if error != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC failed on {name}:\n{log.decode(errors='replace')}")
    return log.decode(errors="replace")


def parse(log):
    """{kernel: (registers, spill stores bytes, spill loads bytes, shared bytes)} from a ptxas -v log."""
    rows, current, spills = {}, None, (0, 0)
    for line in log.splitlines():
        if match := re.search(r"Compiling entry function '(\w+)'", line):
            current = match.group(1)
        elif match := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line):
            spills = (int(match.group(1)), int(match.group(2)))
        elif (match := re.search(r"Used (\d+) registers", line)) and current:
            shared = re.search(r"(\d+) bytes smem", line)
            rows[current] = (int(match.group(1)),) + spills + (int(shared.group(1)) if shared else 0,)
            current, spills = None, (0, 0)
    return rows


def entry_points(source):
    """The names of the ``extern "C" __global__`` kernels in a .cu source, in order."""
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(', source)


def _attribute(kernel, name):
    """CuPy's RawKernel attribute ``name`` (the driver's cuFuncGetAttribute), None where there is none."""
    try:
        return getattr(kernel, name, None)
    except Exception as error:  # a driver error for one attribute should not hide the others
        return f"{type(error).__name__}"


def loaded_report():
    """Print the driver's attributes of every kernel as minseg.cuda loads it (device 0)."""
    print(f"{'kernel':44} {'regs':>5} {'local B':>8} {'smem':>6} {'max threads':>12}")
    for path in cuda.kernel_sources():
        for name in entry_points(path.read_text()):
            kernel = cuda.launch._kernel(path.stem, name, 0)
            values = [_attribute(kernel, attribute) for attribute in
                      ("num_regs", "local_size_bytes", "shared_size_bytes", "max_threads_per_block")]
            print(f"{name:44} " + " ".join(f"{'-' if value is None else value:>{width}}"
                                             for value, width in zip(values, (5, 8, 6, 12))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--loaded", action="store_true", help="the driver's view of the loaded kernels (a GPU)")
    args = parser.parse_args(argv)
    if args.loaded:
        loaded_report()
        return 0
    from cuda.pathfinder import find_nvidia_header_directory
    options = cupy_options(args.arch, find_nvidia_header_directory("cudart"))
    print("NVRTC options:", " ".join(options), "-Xptxas=-v")
    print(f"{'kernel':44} {'regs':>5} {'spill st':>9} {'spill ld':>9} {'smem':>6}")
    for path in cuda.kernel_sources():
        for kernel, (registers, stores, loads, shared) in sorted(parse(ptxas_report(
                path.read_text(), path.name, options)).items()):
            print(f"{kernel:44} {registers:5d} {stores:9d} {loads:9d} {shared:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
