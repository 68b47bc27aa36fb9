"""minseg.cuda and the CUDA kernels in kernels/*.cu.

Without a GPU only the first group runs: the sources are found, compile with nvcc (when it is on
PATH), ``import minseg`` does not import CuPy, and the launch plans fill the GPU and cover K exactly.
Everything marked ``gpu`` needs CuPy and a GPU (skipped cleanly otherwise), or the CPU emulation of
tests/cuda_emulation (``PYTHONPATH=tests python -m pytest -p cuda_emulation -m gpu``, as .ci/run does):
each kernel against the NumPy reference (minseg.functional on the CPU, in float64) on fresh random
inputs and awkward shapes, with every output poisoned with NaN before the launch so that an element a
kernel forgets to write shows up; relative error ‖out − ref‖ / ‖ref‖ ≤ 1e-5. Last, a UNet training step
on the GPU matches the CPU step.
"""
import contextlib
import importlib.util
import itertools
import math
import pathlib
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import minseg
from minseg import cuda

REPO = pathlib.Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


# --- without a GPU -------------------------------------------------------------------------------
def expected_kernel_names():
    conv = [f"conv2d_{gemm}_{tile}" for gemm, tiles in cuda.CONV_GEMM_TILES.items() for tile in tiles]
    cross_entropy = [f"softmax_cross_entropy_{direction}{variant}" for direction in ("forward", "backward")
                     for variant in ("", "_c16", "_c32", "_c64")]
    return {"conv2d.cu": set(conv) | {"split_k_sum"}, "softmax_cross_entropy.cu": set(cross_entropy)}


def test_kernel_sources_are_found_next_to_the_package():
    sources = cuda.kernel_sources()
    assert {path.name for path in sources} >= set(expected_kernel_names())
    assert all(path.is_file() and path.suffix == ".cu" for path in sources)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_with_nvcc_and_define_every_entry_point(tmp_path, arch):
    expected = expected_kernel_names()
    for source in cuda.kernel_sources():
        ptx = tmp_path / f"{source.stem}.ptx"
        # -ftz=true as CuPy compiles (tests/cuda_emulation/resources.py)
        command = ["nvcc", "-std=c++17", "-ftz=true", f"-arch={arch}", "-ptx", str(source), "-o", str(ptx)]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stderr}"
        entries = set(re.findall(r"\.entry\s+(\w+)", ptx.read_text()))
        assert expected.get(source.name, set()) <= entries, f"{source.name} lacks {expected[source.name] - entries}"


def test_importing_minseg_and_minseg_cuda_does_not_import_cupy():
    code = "import sys, minseg, minseg.cuda; assert 'cupy' not in sys.modules, 'cupy was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("gemm, rows, cols, depth, expected", [
    # Plenty of tiles: no split. 98304 pixels / 256 rows = 384 tiles >= 2 * 132 slots.
    ("forward", 98304, 32, 288, ("256x32", (384, 1), 256, 288)),
    # (8,512,6,8) -> 512: 3 x 4 = 12 tiles of 128x128; 22 splits fill the 264 slots, but K = 4608 allows
    # only 18 of at least 256.
    ("forward", 384, 512, 4608, ("128x128", (12, 18), 256, 256)),
    # Weight gradient of (8,32,96,128) -> 32: 3 tiles of 32x128, 4 per multiprocessor: 528 slots, 176 splits.
    ("backward_weight", 32, 288, 98304, ("32x128", (3, 176), 128, 560)),
    # (8,64,360,480) -> 64: 5 tiles; 52 splits = 260 blocks in 264 slots (53 would start a second wave).
    ("backward_weight", 64, 576, 8 * 360 * 480, ("64x128", (5, 52), 256, 26592)),
    # K shorter than one split: one split, K rounded up to whole steps.
    ("backward_input", 6, 5, 3, ("256x32", (1, 1), 256, 16)),
])
def test_plan_conv_gemm_by_hand(gemm, rows, cols, depth, expected):
    assert cuda.plan_conv_gemm(gemm, rows, cols, depth, multiprocessors=132) == expected


def benchmark_gemms():
    """(gemm, rows, cols, depth) of the three GEMMs of every 3x3 convolution in benchmarks/gpu.py."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for N, C, H, W, O in module.CONV_CASES:
        yield from [("forward", N * H * W, O, C * 9), ("backward_input", N * H * W, C, O * 9),
                    ("backward_weight", O, C * 9, N * H * W)]


@pytest.mark.parametrize("multiprocessors", [114, 132])  # H100 PCIe, H100 SXM / H200
@pytest.mark.parametrize("gemm, rows, cols, depth", list(benchmark_gemms()))
def test_plan_conv_gemm_fills_one_wave_on_the_benchmark_shapes(multiprocessors, gemm, rows, cols, depth):
    tile, (tiles, splits), _, k_per_split = cuda.plan_conv_gemm(gemm, rows, cols, depth, multiprocessors)
    slots = multiprocessors * cuda.CONV_TILES[tile][3]
    blocks = tiles * splits
    if splits > 1:
        assert blocks <= slots  # splitting never starts a wave it cannot fill ...
        # ... and fills this one as far as K allows: to within two splits (K is cut in whole steps of 16).
        assert slots - blocks <= 2 * tiles or splits == depth // 256
        assert k_per_split >= 256
    else:  # not split: the tiles fill more than half a wave already, or K is too short to split
        assert tiles * 2 > slots or depth < 2 * 256


def test_choose_split_k_minimises_the_idle_share_of_the_last_wave():
    # ceil(2 * 132 / 5) = 53 splits would make 265 blocks for 264 slots: one block would run alone.
    assert cuda.choose_split_k(tiles=5, slots=264, max_splits=1000) == 52
    assert cuda.choose_split_k(tiles=5, slots=228, max_splits=1000) == 45  # 225 of 228 (46 would be 230)
    assert cuda.choose_split_k(tiles=5, slots=264, max_splits=7) == 7  # K allows no more
    assert cuda.choose_split_k(tiles=300, slots=264, max_splits=1000) == 1  # already more than a wave
    assert cuda.choose_split_k(tiles=1, slots=264, max_splits=0) == 1


def test_the_tile_table_matches_the_launch_bounds_in_conv2d_cu():
    source = (REPO / "kernels" / "conv2d.cu").read_text()
    bounds = re.findall(r"__launch_bounds__\((\d+),\s*(\d+)\)\s*conv2d_(\w+?)_(\d+x\d+)\(", source)
    assert {(gemm, tile) for _, _, gemm, tile in bounds} == {
        (gemm, tile) for gemm, tiles in cuda.CONV_GEMM_TILES.items() for tile in tiles}
    for threads, blocks, _, tile in bounds:
        assert (int(threads), int(blocks)) == cuda.CONV_TILES[tile][2:], tile
    assert f"#define BK {cuda.K_STEP} " in source


def test_plan_stride_phases_by_hand():
    # 8 rows, 3 taps, stride 2, padding 1: even rows (h + 1 odd) get the middle tap from output row h / 2;
    # odd rows get taps 0 and 2 from output rows (h + 1) / 2 and (h - 1) / 2.
    even, odd = cuda.plan_stride_phases(8, 3, 2, 1, 1)
    assert even == cuda.StridePhase(start=0, count=4, taps=range(1, 3, 2), offset=0, dilation=1)
    assert odd == cuda.StridePhase(start=1, count=4, taps=range(0, 3, 2), offset=1, dilation=1)
    # A 1-tap kernel at stride 3: rows 1, 2, 4, 5, ... are reached by no tap.
    assert [len(phase.taps) for phase in cuda.plan_stride_phases(7, 1, 3, 0, 1)] == [1, 0, 0]


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("dilation", [1, 2, 3, 4])
def test_plan_stride_phases_cover_every_tap_that_lands_exactly_once(stride, dilation):
    """The phases' (row, tap, output row) triples are exactly those of the transposed index map."""
    for size, kernel, padding in itertools.product(range(1, 10), range(1, 6), range(4)):
        out_size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if out_size <= 0:
            continue
        expected = {(h, r, (h + padding - r * dilation) // stride) for h in range(size) for r in range(kernel)
                    if (h + padding - r * dilation) % stride == 0
                    and 0 <= (h + padding - r * dilation) // stride < out_size}
        phases = cuda.plan_stride_phases(size, kernel, stride, padding, dilation)
        planned = [(phase.start + i * stride, r, i + phase.offset - j * phase.dilation)
                   for phase in phases for i in range(phase.count) for j, r in enumerate(phase.taps)]
        planned = [triple for triple in planned if 0 <= triple[2] < out_size]
        assert sorted(planned) == sorted(expected), (size, kernel, padding)
        rows = sorted(phase.start + i * stride for phase in phases for i in range(phase.count))
        assert rows == list(range(size)), (size, kernel, padding)


@pytest.mark.parametrize("depth", [1, 7, 8, 9, 255, 256, 1000, 4608, 123457])
@pytest.mark.parametrize("split_k", [None, 1, 2, 3, 50])
def test_plan_conv_gemm_splits_cover_k_exactly_once(depth, split_k):
    _, (tiles, splits), _, k_per_split = cuda.plan_conv_gemm("backward_weight", 40, 90, depth, 132, split_k=split_k)
    assert k_per_split % cuda.K_STEP == 0
    assert (splits - 1) * k_per_split < depth <= splits * k_per_split  # no empty split, nothing left over
    assert tiles == math.ceil(40 / 64) * math.ceil(90 / 128)


def test_plan_conv_gemm_rejects_more_splits_than_a_grid_holds():
    assert cuda.plan_conv_gemm("backward_weight", 40, 90, cuda.K_STEP * 65535, 132, split_k=65535)[1][1] == 65535
    with pytest.raises(ValueError, match="split_k=70000 .* at most 65535"):
        cuda.plan_conv_gemm("backward_weight", 40, 90, cuda.K_STEP * 70000, 132, split_k=70000)


def test_plan_conv_gemm_rejects_a_tile_the_gemm_does_not_have():
    with pytest.raises(ValueError, match="tile"):
        cuda.plan_conv_gemm("forward", 100, 10, 10, 132, tile="32x128")


# --- GPU fixtures and references ---------------------------------------------------------------
def compile_kernels_or_skip(cupy):
    """Build both kernel files once, up front. CuPy 14 without the CUDA headers (pip install
    "cupy-cuda12x[ctk]" or a CUDA toolkit) cannot build raw kernels: that skips with CuPy's message;
    any other failure (a kernel that does not compile) is an error."""
    try:
        with cupy.cuda.Device(0):
            for source in cuda.kernel_sources():
                cuda.launch._module(source.stem, 0)
    except Exception as error:
        if "Failed to find CUDA headers" in str(error):
            pytest.skip(f"CuPy cannot compile the kernels: {error}")
        raise


@pytest.fixture(scope="module")
def cp():
    cupy = pytest.importorskip("cupy")
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy's CUDARuntimeError when there is no driver
        pytest.skip(f"CuPy finds no GPU: {error}")
    if devices == 0:
        pytest.skip("CuPy finds no GPU")
    compile_kernels_or_skip(cupy)
    return cupy


def test_a_missing_cuda_toolkit_skips_the_gpu_tests_with_cupys_message(monkeypatch):
    class NoHeaders:
        cuda = types.SimpleNamespace(Device=lambda device: contextlib.nullcontext())

        def RawModule(self, **options):
            raise RuntimeError("Failed to find CUDA headers. Please install CUDA toolkit headers (e.g., pip "
                               "install cupy-cuda12x[ctk]) or specify CUDA_PATH environment variable.")

    monkeypatch.setattr(cuda.launch, "_cupy", NoHeaders)
    cuda.launch._module.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception, match=r"Failed to find CUDA headers.*cupy-cuda12x\[ctk\]"):
            compile_kernels_or_skip(NoHeaders)
    finally:
        cuda.launch._module.cache_clear()


@pytest.fixture(scope="module")
def F():
    import minseg.functional as functional
    missing = [name for name in ("conv2d", "conv_transpose2d", "cross_entropy") if not hasattr(functional, name)]
    if missing:
        pytest.skip(f"the NumPy reference minseg.functional.{missing[0]} is not available")
    return functional


def relative_error(out, ref):
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)


def poisoned(cp, shape):
    return cp.full(shape, np.nan, dtype=np.float32)


def conv_reference(F, x, weight, grad_y, stride, padding, dilation):
    """y, grad_x, grad_weight from minseg.functional.conv2d on the CPU, in float64."""
    x_t = minseg.Tensor(x.astype(np.float64), requires_grad=True)
    w_t = minseg.Tensor(weight.astype(np.float64), requires_grad=True)
    y = F.conv2d(x_t, w_t, stride=stride, padding=padding, dilation=dilation)
    y.backward(grad_y.astype(np.float64))
    return y.data, x_t.grad, w_t.grad


def output_shape(x_shape, weight_shape, stride, padding, dilation):
    (N, _, H, W), (O, _, KH, KW) = x_shape, weight_shape
    return (N, O, (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1,
            (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1)


# (N, C, H, W), O, (KH, KW), stride, padding, dilation
CONV_CASES = [
    ((1, 1, 5, 7), 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 3, 9, 11), 5, (3, 3), (2, 1), (1, 0), (1, 1)),
    ((1, 4, 8, 8), 6, (1, 1), (1, 1), (0, 0), (1, 1)),       # 1x1
    ((3, 5, 13, 10), 7, (3, 2), (1, 3), (2, 1), (2, 1)),     # everything asymmetric
    ((2, 6, 7, 7), 4, (2, 2), (3, 3), (0, 0), (1, 1)),       # stride > kernel: pixels no tap reaches
    ((1, 3, 1, 1), 2, (3, 3), (1, 1), (1, 1), (1, 1)),       # 1x1 image, all padding
    ((2, 16, 15, 17), 33, (3, 3), (1, 1), (1, 1), (1, 1)),   # 33 columns: two column tiles
    ((1, 70, 6, 9), 130, (3, 3), (1, 1), (1, 1), (1, 1)),    # K = 630, not a multiple of 8
    ((2, 33, 12, 12), 65, (5, 5), (2, 2), (2, 2), (1, 1)),
    ((2, 9, 6, 8), 40, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 64, 6, 8), 96, (3, 3), (1, 1), (1, 1), (1, 1)),     # deep and small: K is split automatically
    ((4, 8, 31, 33), 16, (3, 3), (2, 2), (1, 1), (2, 2)),
    ((2, 6, 8, 10), 5, (2, 2), (2, 2), (0, 0), (1, 1)),      # stride == kernel: input gradient as GEMM + scatter
    ((1, 3, 9, 7), 4, (3, 2), (3, 2), (1, 1), (1, 1)),       # ... with padding, and a last row no tap reaches
]


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape, out_channels, kernel, stride, padding, dilation", CONV_CASES)
def test_conv2d_kernels_match_the_numpy_reference(cp, F, x_shape, out_channels, kernel, stride, padding,
                                                  dilation):
    rng = np.random.default_rng(abs(hash((x_shape, out_channels, kernel, stride))) % 2**32)
    weight_shape = (out_channels, x_shape[1]) + kernel
    y_shape = output_shape(x_shape, weight_shape, stride, padding, dilation)
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(weight_shape).astype(np.float32)
    grad_y = rng.standard_normal(y_shape).astype(np.float32)
    y_ref, grad_x_ref, grad_w_ref = conv_reference(F, x, weight, grad_y, stride, padding, dilation)
    x_gpu, w_gpu, gy_gpu = cp.asarray(x), cp.asarray(weight), cp.asarray(grad_y)

    for gemm in ("forward", "backward_input", "backward_weight"):
        for tile in cuda.CONV_GEMM_TILES[gemm]:
            for split_k in (1, 3, None):
                options = dict(tile=tile, split_k=split_k)
                if gemm == "forward":
                    out = cuda.conv2d_forward(x_gpu, w_gpu, stride, padding, dilation,
                                              out=poisoned(cp, y_shape), **options)
                    ref = y_ref
                elif gemm == "backward_input":
                    out = cuda.conv2d_backward_input(gy_gpu, w_gpu, x_shape, stride, padding, dilation,
                                                     out=poisoned(cp, x_shape), **options)
                    ref = grad_x_ref
                else:
                    out = cuda.conv2d_backward_weight(x_gpu, gy_gpu, weight_shape, stride, padding, dilation,
                                                      out=poisoned(cp, weight_shape), **options)
                    ref = grad_w_ref
                error = relative_error(cp.asnumpy(out), ref)
                assert error <= TOLERANCE, f"conv2d_{gemm}_{tile} split_k={split_k}: relative error {error:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[2] == c[3]])
def test_conv2d_backward_input_implicit_gemm_agrees_with_the_gemm_and_scatter_path(cp, F, case):
    """conv2d_backward_input sends stride == kernel to _backward_input_as_gemm; the implicit GEMM, which
    handles every geometry, must give the same numbers there."""
    x_shape, out_channels, kernel, stride, padding, dilation = case
    weight_shape = (out_channels, x_shape[1]) + kernel
    rng = np.random.default_rng(4)
    weight = rng.standard_normal(weight_shape).astype(np.float32)
    grad_y = rng.standard_normal(output_shape(x_shape, weight_shape, stride, padding, dilation)).astype(np.float32)
    _, grad_x_ref, _ = conv_reference(F, np.zeros(x_shape, np.float32), weight, grad_y, stride, padding, dilation)
    geometry = cuda.conv._conv_geometry("test", x_shape, weight_shape, stride, padding, dilation)
    assert cuda.conv._stride_covers_kernel_exactly(geometry)
    N, C, H, W, O, KH, KW = geometry[:7]
    for tile in cuda.CONV_GEMM_TILES["backward_input"]:
        implicit = cuda.conv._conv_gemm("backward_input", cp.asarray(grad_y), cp.asarray(weight), poisoned(cp, x_shape),
                                   geometry, N * H * W, C, O * KH * KW, tile, None)
        assert relative_error(cp.asnumpy(implicit), grad_x_ref) <= TOLERANCE, tile


@pytest.mark.gpu
@pytest.mark.parametrize("stride", [(2, 2), (3, 2), (2, 1), (1, 3), (4, 4)])
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (4, 4), (5, 3), (2, 3)])
def test_conv2d_backward_input_by_stride_phases_matches_the_numpy_reference(cp, F, stride, kernel):
    """A stride other than the kernel runs _backward_input_by_phases; the implicit GEMM, forced here, must give
    the same numbers (stride == kernel at dilation 1 takes _backward_input_as_gemm). Over paddings and dilations,
    outputs pre-filled with NaN."""
    for padding, dilation in itertools.product([(0, 0), (1, 2), (2, 1)], [(1, 1), (2, 2), (3, 1)]):
        x_shape, weight_shape = (2, 3, 11, 10), (5, 3) + kernel
        y_shape = output_shape(x_shape, weight_shape, stride, padding, dilation)
        if min(y_shape[2:]) <= 0:
            continue
        rng = np.random.default_rng(7)
        weight = rng.standard_normal(weight_shape).astype(np.float32)
        grad_y = rng.standard_normal(y_shape).astype(np.float32)
        _, grad_x_ref, _ = conv_reference(F, np.zeros(x_shape, np.float32), weight, grad_y, stride, padding,
                                          dilation)
        geometry = cuda.conv._conv_geometry("test", x_shape, weight_shape, stride, padding, dilation)
        case = f"stride {stride} kernel {kernel} padding {padding} dilation {dilation}"
        phases = cuda.conv2d_backward_input(cp.asarray(grad_y), cp.asarray(weight), x_shape, stride, padding,
                                            dilation, out=poisoned(cp, x_shape))
        assert relative_error(cp.asnumpy(phases), grad_x_ref) <= TOLERANCE, case
        N, C, H, W, O, KH, KW = geometry[:7]
        implicit = cuda.conv._conv_gemm("backward_input", cp.asarray(grad_y), cp.asarray(weight),
                                        poisoned(cp, x_shape), geometry, N * H * W, C, O * KH * KW, None, None)
        assert relative_error(cp.asnumpy(implicit), grad_x_ref) <= TOLERANCE, case


@pytest.mark.gpu
def test_conv2d_kernels_on_many_waves_of_blocks(cp, F):
    """More tiles than the GPU's resident slots (132 multiprocessors x 2 in the emulation): several waves."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 160, 224)).astype(np.float32)
    weight = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    grad_y = rng.standard_normal((2, 8, 160, 224)).astype(np.float32)
    tile, (tiles, _), _, _ = cuda.plan_conv_gemm("forward", 2 * 160 * 224, 8, 36, 132)
    assert tiles > 132 * cuda.CONV_TILES[tile][3]
    y_ref, grad_x_ref, grad_w_ref = conv_reference(F, x, weight, grad_y, (1, 1), (1, 1), (1, 1))
    x_gpu, w_gpu, gy_gpu = cp.asarray(x), cp.asarray(weight), cp.asarray(grad_y)
    assert relative_error(cp.asnumpy(cuda.conv2d_forward(x_gpu, w_gpu, 1, 1, 1, out=poisoned(cp, y_ref.shape))),
                          y_ref) <= TOLERANCE
    grad_x = cuda.conv2d_backward_input(gy_gpu, w_gpu, x.shape, 1, 1, 1, out=poisoned(cp, x.shape))
    assert relative_error(cp.asnumpy(grad_x), grad_x_ref) <= TOLERANCE
    grad_w = cuda.conv2d_backward_weight(x_gpu, gy_gpu, weight.shape, 1, 1, 1, out=poisoned(cp, weight.shape))
    assert relative_error(cp.asnumpy(grad_w), grad_w_ref) <= TOLERANCE


@pytest.mark.gpu
def test_split_k_sum_walks_its_grid_stride_loop(cp):
    """One block of 256 threads for 1000 outputs: each thread sums four of them."""
    partial = cp.asarray(np.random.default_rng(2).standard_normal((3, 1000)).astype(np.float32))
    out = poisoned(cp, (1000,))
    cuda.launch._launch("conv2d", "split_k_sum", (1, 1, 1), (256, 1, 1), (partial, out, np.int32(1000), np.int32(3)))
    np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(partial).sum(axis=0), rtol=1e-6)


@pytest.mark.gpu
def test_kernels_read_offset_and_strided_views(cp, F):
    """x[1:] starts 4 * C*H*W bytes into its buffer (not on a 16-byte boundary here); x[:, ::2] is not
    contiguous and is copied first. Both must read the same numbers as a fresh array."""
    rng = np.random.default_rng(12)
    x_full = rng.standard_normal((3, 6, 5, 7)).astype(np.float32)   # 6*5*7*4 = 840 bytes per image
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x_gpu = cp.asarray(x_full)
    for view, x in ((x_gpu[1:, :3], x_full[1:, :3]), (x_gpu[1:, ::2], x_full[1:, ::2])):
        y_ref, _, _ = conv_reference(F, np.ascontiguousarray(x), weight, np.zeros((2, 4, 5, 7), np.float32),
                                     (1, 1), (1, 1), (1, 1))
        assert relative_error(cp.asnumpy(cuda.conv2d_forward(view, cp.asarray(weight), 1, 1, 1)), y_ref) <= TOLERANCE
    offset = cp.asarray(x_full)[1:]
    assert offset.data.ptr % 16 != 0
    weight = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
    y_ref, _, _ = conv_reference(F, x_full[1:], weight, np.zeros((2, 4, 5, 7), np.float32), (1, 1), (1, 1), (1, 1))
    assert relative_error(cp.asnumpy(cuda.conv2d_forward(offset, cp.asarray(weight), 1, 1, 1)), y_ref) <= TOLERANCE

    logits, target = x_full[:, :, 0], rng.integers(0, 6, (3, 7)).astype(np.int64)    # (N, C, W) and (N, W)
    loss_full, _ = cuda.softmax_cross_entropy_forward(cp.asarray(np.ascontiguousarray(logits[1:])),
                                                      cp.asarray(target[1:]), None, -100)
    loss_view, _ = cuda.softmax_cross_entropy_forward(cp.asarray(logits)[1:], cp.asarray(target)[1:], None, -100)
    assert np.array_equal(cp.asnumpy(loss_view), cp.asnumpy(loss_full))


@pytest.mark.gpu
def test_a_misaligned_out_is_refused_by_the_conv_kernels_and_fine_for_cross_entropy(cp):
    x = cp.zeros((1, 3, 8, 8), dtype=np.float32)
    weight = cp.zeros((4, 3, 3, 3), dtype=np.float32)
    misaligned = cp.empty(4 * 8 * 8 + 1, dtype=np.float32)[1:].reshape(1, 4, 8, 8)
    assert misaligned.data.ptr % 16 == 4
    with pytest.raises(ValueError, match="conv2d_forward: out must start on a 16-byte boundary"):
        cuda.conv2d_forward(x, weight, 1, 1, 1, out=misaligned)
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 5, 3, 3)).astype(np.float32)
    target = rng.integers(0, 5, (2, 3, 3)).astype(np.int64)
    expected = cuda.softmax_cross_entropy_backward(cp.asarray(logits), cp.asarray(target), None, -100,
                                                   cp.ones((2, 3, 3), dtype=np.float32))
    out = cp.full(logits.size + 1, np.nan, dtype=np.float32)[1:].reshape(logits.shape)
    got = cuda.softmax_cross_entropy_backward(cp.asarray(logits), cp.asarray(target), None, -100,
                                              cp.ones((2, 3, 3), dtype=np.float32), out=out)
    assert np.array_equal(cp.asnumpy(got), cp.asnumpy(expected))


@pytest.mark.gpu
def test_kernels_are_compiled_and_looked_up_once(cp):
    x = cp.zeros((1, 3, 8, 8), dtype=np.float32)
    weight = cp.zeros((4, 3, 3, 3), dtype=np.float32)
    cuda.conv2d_forward(x, weight, 1, 1, 1)
    modules, kernels = cuda.launch._module.cache_info(), cuda.launch._kernel.cache_info()
    cuda.conv2d_forward(x, weight, 1, 1, 1)
    assert cuda.launch._module.cache_info().misses == modules.misses
    assert cuda.launch._kernel.cache_info().misses == kernels.misses
    assert cuda.launch._kernel.cache_info().hits > kernels.hits


@pytest.mark.gpu
def test_conv2d_functions_allocate_outputs_and_accept_int_arguments(cp, F):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 10, 9)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = cuda.conv2d_forward(cp.asarray(x), cp.asarray(weight), 2, 1, 1)
    y_ref, _, _ = conv_reference(F, x, weight, np.zeros((2, 4, 5, 5), np.float32), (2, 2), (1, 1), (1, 1))
    assert y.shape == (2, 4, 5, 5) and y.dtype == np.float32
    assert relative_error(cp.asnumpy(y), y_ref) <= TOLERANCE


@pytest.mark.gpu
def test_conv2d_functions_reject_bad_arguments_by_name(cp):
    x = cp.zeros((1, 3, 8, 8), dtype=np.float32)
    weight = cp.zeros((4, 3, 3, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        cuda.conv2d_forward(x.astype(np.float64), weight, 1, 1, 1)
    with pytest.raises(TypeError, match="weight must be a CuPy array"):
        cuda.conv2d_forward(x, np.zeros((4, 3, 3, 3), np.float32), 1, 1, 1)
    with pytest.raises(ValueError, match="weight has 2 input channels but x has 3"):
        cuda.conv2d_forward(x, cp.zeros((4, 2, 3, 3), dtype=np.float32), 1, 1, 1)
    with pytest.raises(ValueError, match="stride"):
        cuda.conv2d_forward(x, weight, 0, 1, 1)
    with pytest.raises(ValueError, match="out"):
        cuda.conv2d_forward(x, weight, 1, 1, 1, out=cp.zeros((1, 4, 7, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="grad_y"):
        cuda.conv2d_backward_input(cp.zeros((1, 4, 7, 8), dtype=np.float32), weight, x.shape, 1, 1, 1)
    with pytest.raises(ValueError, match="grad_y"):
        cuda.conv2d_backward_weight(x, cp.zeros((1, 4, 7, 8), dtype=np.float32), weight.shape, 1, 1, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape, out_channels, kernel, stride, padding, output_padding, dilation", [
    ((2, 6, 5, 7), 4, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1)),    # UNet's up-sampling
    ((1, 3, 4, 6), 5, (3, 3), (2, 1), (1, 1), (1, 0), (1, 1)),
    ((2, 4, 5, 4), 3, (3, 2), (3, 2), (0, 1), (2, 1), (2, 1)),
])
def test_functional_convolutions_on_gpu_match_cpu(cp, F, x_shape, out_channels, kernel, stride, padding,
                                                  output_padding, dilation):
    """minseg.functional's GPU branch (which calls these kernels) against its own CPU path."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    conv_weight = rng.standard_normal((out_channels, x_shape[1]) + kernel).astype(np.float32)
    transpose_weight = rng.standard_normal((x_shape[1], out_channels) + kernel).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)

    def run(device, transposed):
        x_t = minseg.Tensor(x, requires_grad=True).to(device)
        w_t = minseg.Tensor(transpose_weight if transposed else conv_weight, requires_grad=True).to(device)
        b_t = minseg.Tensor(bias, requires_grad=True).to(device)
        if transposed:
            y = F.conv_transpose2d(x_t, w_t, b_t, stride=stride, padding=padding, output_padding=output_padding,
                                   dilation=dilation)
        else:
            y = F.conv2d(x_t, w_t, b_t, stride=stride, padding=padding, dilation=dilation)
        grad_y = np.random.default_rng(8).standard_normal(y.shape).astype(np.float32)
        y.backward(minseg.backend.to_device(grad_y, device))
        return [minseg.backend.to_device(a, "cpu") for a in (y.data, x_t.grad, w_t.grad, b_t.grad)]

    for transposed in (False, True):
        for name, on_gpu, on_cpu in zip(("y", "grad_x", "grad_weight", "grad_bias"), run("cuda", transposed),
                                        run("cpu", transposed)):
            error = relative_error(on_gpu, on_cpu)
            assert error <= TOLERANCE, f"{'conv_transpose2d' if transposed else 'conv2d'} {name}: {error:.2e}"


def forward_backward(fn, arrays, device, constants=()):
    """fn(*tensors, *constants) on ``device``, with a fixed random upstream gradient: [y, grad of each array]."""
    tensors = [minseg.Tensor(a, requires_grad=True).to(device) for a in arrays]
    y = fn(*tensors, *[minseg.backend.to_device(c, device) for c in constants])
    grad_y = np.random.default_rng(8).standard_normal(y.shape).astype(y.dtype)
    y.backward(minseg.backend.to_device(grad_y, device))
    return [minseg.backend.to_device(a, "cpu") for a in [y.data] + [t.grad for t in tensors]]


def layer_cases(F):
    rng = np.random.default_rng(21)

    def normal(*shape, dtype=np.float32):
        return rng.standard_normal(shape).astype(dtype)
    yield "grouped conv2d", lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=1, groups=2), \
        [normal(2, 6, 9, 8), normal(4, 3, 3, 3)], (), 1e-5
    yield "depthwise conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=2, dilation=2, groups=5), \
        [normal(2, 5, 7, 9), normal(5, 1, 3, 3), normal(5)], (), 1e-5
    yield "grouped conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=2, groups=3), \
        [normal(1, 6, 4, 5), normal(6, 2, 2, 2)], (), 1e-5
    yield "group_norm", lambda x, w, b: F.group_norm(x, 3, w, b), [normal(2, 6, 5, 7), normal(6), normal(6)], (), 1e-5
    yield "point_sample", lambda x, points: F.point_sample(x, points), [normal(2, 3, 6, 7)], \
        (rng.random((2, 11, 2)).astype(np.float32),), 1e-5
    # float64 CuPy arrays take conv.py's plain im2col path through CuPy (GPU gradient checks need it)
    yield "float64 conv2d", lambda x, w: F.conv2d(x, w, stride=2, padding=1), \
        [normal(2, 3, 7, 8, dtype=np.float64), normal(4, 3, 3, 3, dtype=np.float64)], (), 1e-12
    yield "float64 conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), \
        [normal(2, 3, 4, 5, dtype=np.float64), normal(3, 2, 3, 3, dtype=np.float64)], (), 1e-12


@pytest.mark.gpu
def test_layers_on_gpu_match_cpu(cp, F):
    """Forward and every gradient of each layer, on the GPU against the CPU, in the layer's own dtype."""
    missing = [name for name in ("group_norm", "point_sample") if not hasattr(F, name)]
    if missing:
        pytest.skip(f"minseg.functional.{missing[0]} does not exist yet")
    for name, fn, arrays, constants, tolerance in layer_cases(F):
        on_gpu, on_cpu = forward_backward(fn, arrays, "cuda", constants), forward_backward(fn, arrays, "cpu", constants)
        for index, (gpu, cpu) in enumerate(zip(on_gpu, on_cpu)):
            assert gpu.dtype == cpu.dtype == arrays[0].dtype, name
            error = relative_error(gpu, cpu)
            assert error <= tolerance, f"{name}, {'output' if index == 0 else f'gradient {index}'}: {error:.2e}"


# (N, C, H, W), class weights?, ignore_index; C crosses the 16 / 32 / 64 register variants
CROSS_ENTROPY_CASES = [
    ((1, 1, 1, 1), False, -100),
    ((2, 3, 5, 7), True, 1),
    ((1, 16, 9, 13), False, -100),
    ((3, 17, 4, 5), True, 255),
    ((2, 32, 8, 9), True, 3),
    ((1, 33, 6, 7), False, 0),
    ((2, 64, 5, 5), True, -1),
    ((1, 65, 3, 11), True, 7),
    ((1, 150, 4, 4), False, 2),
]


@pytest.mark.gpu
@pytest.mark.parametrize("shape, with_weights, ignore_index", CROSS_ENTROPY_CASES)
def test_softmax_cross_entropy_kernels_match_the_numpy_reference(cp, F, shape, with_weights, ignore_index):
    N, C, H, W = shape
    rng = np.random.default_rng(abs(hash((shape, ignore_index))) % 2**32)
    logits = (rng.standard_normal(shape) * 4).astype(np.float32)
    logits[0, :, 0, 0] += 60  # large logits must stay finite (the max is subtracted)
    target = rng.integers(0, C, (N, H, W)).astype(np.int64)
    target[rng.random((N, H, W)) < 0.3] = ignore_index
    class_weight = (rng.random(C) + 0.5).astype(np.float32) if with_weights else None
    grad_loss = rng.standard_normal((N, H, W)).astype(np.float32)

    logits_t = minseg.Tensor(logits.astype(np.float64), requires_grad=True)
    weight_t = None if class_weight is None else minseg.Tensor(class_weight.astype(np.float64))
    loss_ref = F.cross_entropy(logits_t, minseg.Tensor(target), weight=weight_t, ignore_index=ignore_index,
                               reduction="none")
    loss_ref.backward(grad_loss.astype(np.float64))
    counted = target != ignore_index
    weights = class_weight if with_weights else np.ones(C)
    pixel_weight_ref = np.where(counted, weights[np.where(counted, target, 0)], 0)

    args = (cp.asarray(logits), cp.asarray(target), None if class_weight is None else cp.asarray(class_weight),
            ignore_index)
    loss, pixel_weight = cuda.softmax_cross_entropy_forward(
        *args, out=(poisoned(cp, (N, H, W)), poisoned(cp, (N, H, W))))
    grad = cuda.softmax_cross_entropy_backward(*args, cp.asarray(grad_loss), out=poisoned(cp, shape))
    assert relative_error(cp.asnumpy(loss), loss_ref.data) <= TOLERANCE
    assert np.array_equal(cp.asnumpy(pixel_weight), pixel_weight_ref.astype(np.float32))
    assert relative_error(cp.asnumpy(grad), logits_t.grad) <= TOLERANCE
    assert np.all(cp.asnumpy(grad)[np.broadcast_to(~counted[:, None], shape)] == 0)  # ignored: exactly 0


@pytest.mark.gpu
def test_softmax_cross_entropy_loss_of_confident_pixels_with_large_logits_stays_precise(cp, F):
    """Regression: the forward once computed (max + log Σ) − logit[target], so a confident pixel's small
    loss (≈ 0.06 here) carried the rounding error of the large maximum (≈ 66): 2.6e-5 relative."""
    rng = np.random.default_rng(5)
    N, C, H, W = 2, 10, 8, 8
    target = rng.integers(0, C, (N, H, W)).astype(np.int64)
    logits = rng.standard_normal((N, C, H, W)).astype(np.float32)
    np.put_along_axis(logits, target[:, None], np.take_along_axis(logits, target[:, None], axis=1) + 6, axis=1)
    logits += 60  # the same losses as without the shift, at logits a trained network reaches
    loss_ref = F.cross_entropy(minseg.Tensor(logits.astype(np.float64)), minseg.Tensor(target), reduction="none")
    loss, _ = cuda.softmax_cross_entropy_forward(cp.asarray(logits), cp.asarray(target), None, -100)
    assert relative_error(cp.asnumpy(loss), loss_ref.data) <= TOLERANCE


@pytest.mark.gpu
def test_softmax_cross_entropy_marks_an_invalid_target_with_nan(cp):
    logits = cp.asarray(np.random.default_rng(0).standard_normal((1, 4, 2, 2)).astype(np.float32))
    target = cp.asarray(np.array([[[0, 5], [-3, 2]]], dtype=np.int64))
    loss, pixel_weight = cuda.softmax_cross_entropy_forward(logits, target, None, -100)
    invalid = np.array([[[False, True], [True, False]]])
    assert np.array_equal(np.isnan(cp.asnumpy(loss)), invalid)
    grad = cuda.softmax_cross_entropy_backward(logits, target, None, -100, cp.ones((1, 2, 2), dtype=np.float32))
    assert np.array_equal(np.isnan(cp.asnumpy(grad)).all(axis=1), invalid)


def cross_entropy_by_definition(logits, target):
    """float64 loss and d(sum of loss)/d(logits) per pixel, written for non-finite logits: a class at -inf
    has probability 0; a pixel with a NaN logit, or with every logit -inf, gets NaN."""
    logits = logits.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        maximum = logits.max(axis=1, keepdims=True)  # NaN when any logit is NaN
        exp = np.exp(logits - maximum)                # NaN for a pixel of all -inf
        sum_exp = exp.sum(axis=1, keepdims=True)
        target_logit = np.take_along_axis(logits, target[:, None], axis=1)
        loss = ((maximum - target_logit) + np.log(sum_exp))[:, 0]
        grad = exp / sum_exp
    np.put_along_axis(grad, target[:, None], np.take_along_axis(grad, target[:, None], axis=1) - 1, axis=1)
    return loss, grad


@pytest.mark.gpu
@pytest.mark.parametrize("classes", [5, 20, 40, 100])  # the c16, c32, c64 and chunked kernels
def test_softmax_cross_entropy_handles_minus_infinity_and_nan_logits(cp, classes):
    rng = np.random.default_rng(classes)
    N, H, W = 2, 4, 5
    logits = rng.standard_normal((N, classes, H, W)).astype(np.float32) * 3
    leading = min(classes // 2, 33)                   # -inf before any finite logit (past a chunk of 32) ...
    target = rng.integers(leading, classes, (N, H, W)).astype(np.int64)
    target_logit = np.take_along_axis(logits, target[:, None], axis=1)
    logits[rng.random(logits.shape) < 0.3] = -np.inf  # ... and masked classes anywhere, but
    logits[:, :leading] = -np.inf
    np.put_along_axis(logits, target[:, None], target_logit, axis=1)  # never the target's
    target[0, 0, 1] = 0                               # a target at -inf: loss +inf
    logits[0, :, 0, 2] = -np.inf                      # every logit -inf: NaN
    logits[1, classes - 1, 1, 1] = np.nan             # a NaN last, first and in between
    logits[1, 0, 2, 2] = np.nan
    logits[1, classes // 2, 3, 3] = np.nan
    loss_ref, grad_ref = cross_entropy_by_definition(logits, target)

    args = (cp.asarray(logits), cp.asarray(target), None, -100)
    loss, _ = cuda.softmax_cross_entropy_forward(*args, out=(poisoned(cp, (N, H, W)), poisoned(cp, (N, H, W))))
    grad = cp.asnumpy(cuda.softmax_cross_entropy_backward(*args, cp.ones((N, H, W), dtype=np.float32),
                                                          out=poisoned(cp, logits.shape)))
    loss = cp.asnumpy(loss)
    nan_pixels = np.isnan(loss_ref)
    assert nan_pixels.sum() == 4 and np.isposinf(loss_ref[0, 0, 1])
    assert np.array_equal(np.isnan(loss), nan_pixels)
    assert np.isposinf(loss[0, 0, 1])
    finite = np.isfinite(loss_ref)
    assert relative_error(loss[finite], loss_ref[finite]) <= TOLERANCE
    assert np.isnan(grad.transpose(0, 2, 3, 1)[nan_pixels]).all()
    counted = np.broadcast_to(~nan_pixels[:, None], grad.shape)
    assert relative_error(grad[counted], grad_ref[counted]) <= TOLERANCE
    assert np.all(grad[counted & (logits == -np.inf) & (np.arange(classes)[None, :, None, None] != target[:, None])]
                  == 0)


@pytest.mark.gpu
def test_softmax_cross_entropy_rejects_bad_arguments_by_name(cp):
    logits = cp.zeros((2, 3, 4, 4), dtype=np.float32)
    target = cp.zeros((2, 4, 4), dtype=np.int64)
    with pytest.raises(TypeError, match="target must be int64"):
        cuda.softmax_cross_entropy_forward(logits, target.astype(np.int32), None, -100)
    with pytest.raises(ValueError, match="target must have shape"):
        cuda.softmax_cross_entropy_forward(logits, target[:, :3], None, -100)
    with pytest.raises(ValueError, match="class_weight"):
        cuda.softmax_cross_entropy_forward(logits, target, cp.ones(4, dtype=np.float32), -100)
    with pytest.raises(ValueError, match="grad_loss"):
        cuda.softmax_cross_entropy_backward(logits, target, None, -100, cp.ones((2, 4), dtype=np.float32))


@pytest.mark.gpu
def test_unet_training_step_on_gpu_matches_cpu(cp, F):
    models = pytest.importorskip("minseg.models")
    optim = pytest.importorskip("minseg.optim")
    if not hasattr(models, "create") or not hasattr(optim, "SGD"):
        pytest.skip("minseg.models.create or minseg.optim.SGD is not available")
    rng = np.random.default_rng(11)
    images = rng.standard_normal((2, 3, 32, 48)).astype(np.float32)
    targets = rng.integers(0, 5, (2, 32, 48)).astype(np.int64)
    targets[:, :4] = -100  # a void band, ignored

    def train_step(device):
        minseg.manual_seed(0)  # the same initial weights on both devices
        model = models.create("unet", num_classes=5, in_channels=3, base=8, depth=2).to(device)
        model.train()
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = minseg.Tensor(images).to(device)
        t = minseg.Tensor(targets).to(device)
        loss = F.cross_entropy(model(x), t, ignore_index=-100)
        model.zero_grad()
        loss.backward()
        grads = {name: minseg.backend.to_device(p.grad, "cpu") for name, p in model.named_parameters()}
        optimizer.step()
        after = F.cross_entropy(model(x), t, ignore_index=-100)
        return loss.item(), grads, model.state_dict(), after.item()

    loss_gpu, grads_gpu, state_gpu, after_gpu = train_step("cuda")
    loss_cpu, grads_cpu, state_cpu, after_cpu = train_step("cpu")
    assert abs(loss_gpu - loss_cpu) <= TOLERANCE * abs(loss_cpu)
    # Summation order differs between BLAS and the kernels; through a whole network (batch norm
    # divides by small batch statistics) a gradient agrees to about 1e-5 relative, allow 1e-4.
    # A conv bias followed by batch norm has a gradient of exactly 0 in exact arithmetic, so its
    # computed value is rounding noise: each gradient is measured against at least 1e-3 of the
    # whole gradient's norm.
    whole = math.sqrt(sum(float(np.sum(grad.astype(np.float64) ** 2)) for grad in grads_cpu.values()))
    for name, grad in grads_cpu.items():
        difference = np.linalg.norm(grads_gpu[name].astype(np.float64) - grad)
        scale = max(np.linalg.norm(grad.astype(np.float64)), 1e-3 * whole)
        assert difference <= 1e-4 * scale, f"gradient of {name}: {difference / scale:.2e} relative"
    for name, value in state_cpu.items():
        assert relative_error(state_gpu[name], value) <= 1e-5, f"{name} after the SGD step"
    assert abs(after_gpu - after_cpu) <= 1e-4 * abs(after_cpu)
