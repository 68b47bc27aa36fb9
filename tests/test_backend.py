"""The NumPy/CuPy switch: CPU always works, 'cuda' fails clearly without CuPy or a GPU."""
import sys

import numpy as np
import pytest

from minseg import Tensor, backend


def test_numpy_arrays_use_numpy():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(np.ones(2), 3.0) is np
    assert backend.device_of(np.ones(2)) == "cpu"


def test_importing_minseg_does_not_import_cupy():
    import subprocess
    code = "import sys, minseg, minseg.nn, minseg.functional; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="device must be one of"):
        backend.to_device(np.ones(2), "tpu")


@pytest.mark.skipif(backend.cupy_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_says_what_to_install():
    with pytest.raises(RuntimeError, match="cupy"):
        Tensor(np.ones(2)).to("cuda")


class FakeGpuArray:
    """Looks like a CuPy array to the backend (its type lives in a module named cupy)."""

    shape = (2,)


FakeGpuArray.__module__ = "cupy._core.core"


def test_mixing_cpu_and_gpu_arrays_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"same device.*cpu \(2,\).*cuda \(2,\)"):
        backend.check_same_device([np.ones(2), FakeGpuArray()], "add")
