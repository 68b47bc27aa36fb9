"""Run minseg's CUDA kernels on the CPU, unchanged, so that their arithmetic is tested without a GPU.

``kernels/*.cu`` compile as host C++ against ``shim.h`` (threads as fibers with real barriers, shared
memory filled with NaN before every block, checked loads) and ``fake_cupy`` stands in for the part of
CuPy that ``minseg.cuda`` uses, checking every launch's arguments against the kernel's C signature.
What it checks and what it cannot: docs/gpu.md, "Testing the kernels without a GPU".

Use it as a pytest plugin, from the repository root (``.ci/run`` does)::

    PYTHONPATH=tests python -m pytest -p cuda_emulation -m gpu

or in code: ``cuda_emulation.install()`` before minseg first imports cupy.
"""
import os
import sys

__all__ = ["install", "installed"]


def install():
    """Make ``import cupy`` return the emulation. Refuses when a real CuPy is already imported."""
    from . import fake_cupy
    current = sys.modules.get("cupy")
    if current is not None and current is not fake_cupy:
        raise RuntimeError("cuda_emulation: a real cupy is already imported; the emulation is for machines without")
    sys.modules["cupy"] = fake_cupy
    return fake_cupy


def installed():
    from . import fake_cupy
    return sys.modules.get("cupy") is fake_cupy


def pytest_configure(config):
    install()
    os.environ["MINSEG_CUDA_EMULATION"] = "1"  # tells tests/test_cuda.py which GPU it is on


def pytest_report_header(config):
    return "minseg: CUDA kernels run on the CPU emulation (tests/cuda_emulation), not on a GPU"
