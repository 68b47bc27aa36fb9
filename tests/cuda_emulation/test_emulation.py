"""The emulation itself: it must catch what it claims to catch (docs/gpu.md, "Testing the kernels without a GPU").

Small kernels written for the purpose, each with one defect the emulation is there to find.
"""
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulation builds kernels with g++")

SOURCE = r"""
#define THREADS 64
// out[i] = in[i] + in[i + 1] through shared memory; `barrier` = 0 skips the barrier between write and read.
extern "C" __global__ void __launch_bounds__(THREADS) neighbour_sum(const float* __restrict__ in, float* out,
                                                                    int n, int barrier) {
    __shared__ float tile[THREADS + 1];
    const int i = blockIdx.x * THREADS + threadIdx.x;
    tile[threadIdx.x] = i < n ? __ldg(in + i) : 0.f;
    if (threadIdx.x == 0) tile[THREADS] = i + THREADS < n ? __ldg(in + i + THREADS) : 0.f;
    if (barrier) __syncthreads();
    if (i < n) out[i] = tile[threadIdx.x] + tile[threadIdx.x + 1];
}
// A barrier that only half the block reaches.
extern "C" __global__ void divergent(float* out) {
    if (threadIdx.x % 2) return;
    __syncthreads();
    out[threadIdx.x] = 1.f;
}
// Reads one element past the end when `past` is 1; writes one past the end when `past` is 2.
extern "C" __global__ void off_by_one(const float* in, float* out, int n, long long past) {
    const int i = threadIdx.x;
    if (i < n) out[i] = __ldg(in + i + (past == 1 && i == n - 1));
    if (past == 2 && i == 0) out[n] = 0.f;
}
"""


@pytest.fixture(scope="module")
def emulation():
    from . import build, fake_cupy
    return build.Module(SOURCE), fake_cupy


def launch(emulation, name, grid, block, args):
    module, fake_cupy = emulation
    module.launch(name, grid, block, args, fake_cupy._pointer_of)
    for value in args:
        fake_cupy.check_guards(value)


def test_a_kernel_runs_with_every_thread_of_every_block(emulation):
    _, cupy = emulation
    values = np.arange(200, dtype=np.float32)
    out = cupy.full(200, np.nan, dtype=np.float32)
    launch(emulation, "neighbour_sum", (4,), (64,), (cupy.asarray(values), out, np.int32(200), np.int32(1)))
    np.testing.assert_array_equal(out.get(), values + np.append(values[1:], 0))


def test_a_missing_barrier_reads_the_nan_that_fills_shared_memory(emulation):
    _, cupy = emulation
    out = cupy.zeros(200, dtype=np.float32)
    launch(emulation, "neighbour_sum", (4,), (64,), (cupy.ones(200, dtype=np.float32), out, np.int32(200),
                                                     np.int32(0)))
    assert np.isnan(out.get()).any()  # thread t ran before thread t + 1 wrote its value


def test_a_barrier_in_divergent_code_is_reported(emulation):
    _, cupy = emulation
    with pytest.raises(RuntimeError, match="divergent"):
        launch(emulation, "divergent", (1,), (32,), (cupy.zeros(32, dtype=np.float32),))


def test_reads_and_writes_past_an_array_are_caught(emulation):
    _, cupy = emulation
    args = (cupy.ones(8, dtype=np.float32), cupy.zeros(8, dtype=np.float32), np.int32(8))
    launch(emulation, "off_by_one", (1,), (8,), args + (np.int64(0),))
    with pytest.raises(RuntimeError, match="__ldg outside every array argument"):
        launch(emulation, "off_by_one", (1,), (8,), args + (np.int64(1),))
    with pytest.raises(RuntimeError, match="wrote outside an array"):
        launch(emulation, "off_by_one", (1,), (8,), args + (np.int64(2),))


def test_arguments_are_checked_as_cupy_converts_them(emulation):
    _, cupy = emulation
    values, out = cupy.ones(8, dtype=np.float32), cupy.zeros(8, dtype=np.float32)
    with pytest.raises(TypeError, match=r"argument 2 \(int n\): CuPy passes this int as int64 \(8 bytes\)"):
        launch(emulation, "off_by_one", (1,), (8,), (values, out, 8, np.int64(0)))
    launch(emulation, "off_by_one", (1,), (8,), (values, out, np.int32(8), 0))  # a Python int is a long long
    with pytest.raises(TypeError, match="points to float32, got an array of float64"):
        launch(emulation, "off_by_one", (1,), (8,), (cupy.ones(8), out, np.int32(8), 0))
    with pytest.raises(TypeError, match="must be a GPU array"):
        launch(emulation, "off_by_one", (1,), (8,), (np.ones(8, np.float32), out, np.int32(8), 0))
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        launch(emulation, "off_by_one", (1,), (8,), (values, out, np.int32(8)))


def test_launch_limits_are_those_of_cuda(emulation):
    _, cupy = emulation
    args = (cupy.ones(8, dtype=np.float32), cupy.zeros(8, dtype=np.float32), np.int32(8), np.int32(1))
    with pytest.raises(RuntimeError, match=r"above its __launch_bounds__\(64\)"):
        launch(emulation, "neighbour_sum", (1,), (128,), args)
    with pytest.raises(RuntimeError, match="exceeds CUDA's limits"):
        launch(emulation, "neighbour_sum", (1, 70000), (64,), args)
