"""Launch planning for kernels/conv2d.cu, in plain Python: tested without a GPU (tests/test_cuda.py).

Two decisions: how one GEMM is cut into blocks and splits of K (``plan_conv_gemm``, ``choose_split_k``),
and how a strided transposed convolution is cut into stride phases of stride 1 (``plan_stride_phases``).
"""
import math
from typing import NamedTuple

# Block tiles of conv2d.cu: kernel suffix -> (rows per block, columns per block, threads per block,
# blocks per multiprocessor). The last is the second argument of the kernel's __launch_bounds__, which
# caps registers so that many blocks fit (tests/test_cuda.py checks the two agree); shared memory
# (at most 2 * 16 * (128 + 128 + 8) floats = 33 KB a block) is not the limit on sm_80 / sm_90.
CONV_TILES = {"256x32": (256, 32, 256, 2), "128x64": (128, 64, 256, 2), "128x128": (128, 128, 256, 2),
              "32x128": (32, 128, 128, 4), "64x128": (64, 128, 256, 2)}
CONV_GEMM_TILES = {"forward": ("256x32", "128x64", "128x128"),
                   "backward_input": ("256x32", "128x64", "128x128"),
                   "backward_weight": ("32x128", "64x128", "128x128")}
K_STEP = 16  # BK in conv2d.cu: splits of K are whole multiples of it
_MIN_K_PER_SPLIT = 256  # a shorter split spends more on the partial sums than it saves
_MAX_GRID_Y = 65535  # CUDA's limit on a grid's y (and z) dimension


# --- one GEMM: block tiles and splits of K ------------------------------------------------------
def choose_split_k(tiles, slots, max_splits):
    """The number of splits of K (1..max_splits) whose tiles * splits blocks leave the least idle share of
    their last wave on ``slots`` resident blocks; ties go to fewer splits.

    K is split only to fill one wave: at most ceil(slots / tiles) splits. More would not be faster (each
    split's block is shorter by the same factor as there are more of them) but writes more partial sums.
    """
    def idle_share(splits):
        blocks = tiles * splits
        return (-blocks % slots) / slots  # empty slots in the last wave, over a wave

    candidates = range(1, max(1, min(max_splits, math.ceil(slots / tiles))) + 1)
    return min(candidates, key=lambda splits: (idle_share(splits), splits))


def plan_conv_gemm(gemm, rows, cols, depth, multiprocessors, tile=None, split_k=None):
    """How to launch one of conv2d.cu's GEMMs (rows x cols output, ``depth`` = the summed K).

    Returns (tile name, (grid_x, grid_y), threads, k_per_split). grid_x counts the block tiles,
    grid_y the splits of K; a single split writes the output directly. Without ``split_k``, K is
    split by choose_split_k over the multiprocessors' slots (blocks per multiprocessor from
    CONV_TILES), never into pieces shorter than _MIN_K_PER_SPLIT.
    """
    if tile is None:
        if gemm == "backward_weight":  # rows = output channels, cols = C*KH*KW (always >= 9 or so)
            tile = "32x128" if rows <= 32 else "64x128" if rows <= 64 else "128x128"
        else:  # rows = pixels, cols = channels
            tile = "256x32" if cols <= 32 else "128x64" if cols <= 64 else "128x128"
    if tile not in CONV_GEMM_TILES[gemm]:
        raise ValueError(f"conv2d_{gemm}: tile must be one of {CONV_GEMM_TILES[gemm]}, got {tile!r}")
    block_rows, block_cols, threads, blocks_per_multiprocessor = CONV_TILES[tile]
    tiles = math.ceil(rows / block_rows) * math.ceil(cols / block_cols)
    if split_k is None:
        split_k = choose_split_k(tiles, multiprocessors * blocks_per_multiprocessor, depth // _MIN_K_PER_SPLIT)
    if split_k < 1:
        raise ValueError(f"conv2d_{gemm}: split_k must be >= 1, got {split_k}")
    k_per_split = max(K_STEP, math.ceil(math.ceil(depth / split_k) / K_STEP) * K_STEP)
    splits = max(1, math.ceil(depth / k_per_split))  # no empty split
    if splits > _MAX_GRID_Y:  # the splits are the grid's y dimension
        raise ValueError(f"conv2d_{gemm}: split_k={split_k} would launch {splits} splits of K; "
                         f"at most {_MAX_GRID_Y} fit in a CUDA grid, pass a smaller split_k")
    return tile, (tiles, splits), threads, k_per_split


# --- a strided transposed convolution: stride phases --------------------------------------------
class StridePhase(NamedTuple):
    """One phase of one axis: input rows ``start, start + stride, ...`` (``count`` of them) and the taps
    that reach them. Phase row i gets tap ``taps[j]`` from output row ``i + offset - j * dilation``."""
    start: int
    count: int
    taps: range
    offset: int
    dilation: int


def plan_stride_phases(size, kernel, stride, padding, dilation):
    """The phases of one axis of conv2d_backward_input (``size`` input rows, a ``kernel``-tap window).

    Tap r feeds input row h from output row oh = (h + padding - r*dilation) / stride when that division
    is exact. Write h + padding = q*stride + rho and r*dilation = q_r*stride + rho_r: the division is exact
    iff rho_r == rho, and then oh = q - q_r. So the rows of one residue rho (every stride-th row, from
    ``start``) are reached by the same taps, r = r_0, r_0 + stride/g, ... (g = gcd(stride, dilation)), whose
    q_r grow by dilation/g: a stride-1 transposed convolution with those taps and dilation dilation/g.
    A phase that no tap reaches has empty ``taps`` (its rows get zero).
    """
    common = math.gcd(stride, dilation)
    step = stride // common
    phases = []
    for start in range(min(stride, size)):
        rho, q = (start + padding) % stride, (start + padding) // stride
        hits = [r for r in range(kernel) if r * dilation % stride == rho]
        taps = range(hits[0], kernel, step) if hits else range(0)
        offset = q - (taps[0] * dilation // stride if hits else 0)
        phases.append(StridePhase(start, math.ceil((size - start) / stride), taps, offset, dilation // common))
    return phases
