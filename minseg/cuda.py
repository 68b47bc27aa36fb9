"""The bridge to the CUDA kernels in ``kernels/*.cu``: the only module that knows they exist.

``functional/conv.py`` and ``functional/loss.py`` compute with NumPy-style array code; when their
arrays are float32 CuPy arrays they call the functions here instead. Each function checks its
arrays, allocates the outputs (or writes into ``out=``), picks a kernel and its launch grid, and
launches it. Read each kernel next to its NumPy twin: ``kernels/conv2d.cu`` with
``functional/im2col.py`` + ``functional/conv.py``, ``kernels/softmax_cross_entropy.cu`` with
``cross_entropy`` in ``functional/loss.py``.

The ``.cu`` files are compiled from source by ``cupy.RawModule`` (NVRTC) the first time a kernel
is needed, once per file per process and device (CuPy also caches the binary on disk); the module,
each kernel object and the device's multiprocessor count are cached here, and kernels launch on the
device that holds their arrays. CuPy is imported only inside these functions, so ``import minseg``
never needs it. Without a GPU, tests/cuda_emulation runs these same functions and kernels on the CPU.

All arrays are float32 (targets int64) CuPy arrays; inputs that are not C-contiguous are copied
to be. stride, padding and dilation are ``(int, int)`` pairs (an int means both). No bias: the
callers add it.
"""
import functools
import math
import pathlib

import numpy as np

from . import backend
from .arguments import pair

__all__ = ["kernel_sources", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
# An installed wheel carries the sources as package data (minseg/kernels/*.cu, see setup.cfg);
# a source checkout keeps them in the repository's top-level kernels/, next to the package.
_KERNEL_DIRS = (_PACKAGE_DIR / "kernels", _PACKAGE_DIR.parent / "kernels")
_COMPILE_OPTIONS = ("-std=c++17",)  # CuPy adds -ftz=true and -arch=sm_<cc> (tests/cuda_emulation/resources.py)
_MAX_ELEMENTS = 2**31 - 1  # the conv kernels index with 32-bit ints
_MAX_GRID_Y = 65535  # CUDA's limit on a grid's y (and z) dimension

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
_CE_THREADS = 256  # PIXELS_PER_BLOCK in softmax_cross_entropy.cu
_CE_REGISTER_VARIANTS = (16, 32, 64)  # softmax_cross_entropy_{forward,backward}_c<MAX_C>


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


# --- argument checks ---------------------------------------------------------------------------
def _check_array(where, name, array, dtype, ndim=None):
    """``array`` as a C-contiguous CuPy array of ``dtype``, or an error naming ``name``."""
    cupy = _cupy()
    if not isinstance(array, cupy.ndarray):
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
        return cupy.ascontiguousarray(array)


def _output(where, out, shape, like, name="out"):
    """A fresh float32 array of ``shape`` on ``like``'s device, or ``out`` once checked (tests pass NaN-filled
    ones)."""
    cupy = _cupy()
    if out is None:
        with like.device:
            return cupy.empty(shape, dtype=np.float32)
    if not isinstance(out, cupy.ndarray) or out.dtype != np.float32 or tuple(out.shape) != tuple(shape) \
            or not out.flags.c_contiguous:
        found = (f"{type(out).__name__} {getattr(out, 'dtype', '')} {tuple(getattr(out, 'shape', ()))}"
                 f"{'' if getattr(out, 'flags', None) is None or out.flags.c_contiguous else ' non-contiguous'}")
        raise ValueError(f"{where}: {name} must be a C-contiguous float32 CuPy array of shape {tuple(shape)}, "
                         f"got {found}")
    if out.size > _MAX_ELEMENTS:
        raise ValueError(f"{where}: {name} has {out.size} elements; the kernels handle at most {_MAX_ELEMENTS}")
    return out


def _conv_geometry(where, x_shape, weight_shape, stride, padding, dilation):
    """The 15 ints every conv2d kernel takes, after checking that they describe a convolution."""
    N, C, H, W = (int(v) for v in x_shape)
    O, weight_channels, KH, KW = (int(v) for v in weight_shape)
    if weight_channels != C:
        raise ValueError(f"{where}: weight has {weight_channels} input channels but x has {C}")
    (sh, sw), (ph, pw), (dh, dw) = (pair(where, "stride", stride, 1), pair(where, "padding", padding, 0),
                                    pair(where, "dilation", dilation, 1))
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    if OH <= 0 or OW <= 0:
        raise ValueError(f"{where}: the {KH}x{KW} kernel (dilation {(dh, dw)}) does not fit the "
                         f"{H}x{W} input with padding {(ph, pw)}: output would be {OH}x{OW}")
    return (N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)


# --- convolution: three GEMMs, one plan ---------------------------------------------------------
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


def _conv_gemm(gemm, a, b, out, geometry, rows, cols, depth, tile, split_k):
    """Launch conv2d_<gemm>_<tile> writing ``out``; with K split, through a workspace and split_k_sum."""
    cupy = _cupy()
    if out.data.ptr % 16:  # the kernels store four floats at a time
        raise ValueError(f"conv2d_{gemm}: out must start on a 16-byte boundary (fresh CuPy arrays do); "
                         "got a view into the middle of another array")
    tile, (tiles, splits), threads, k_per_split = plan_conv_gemm(
        gemm, rows, cols, depth, _multiprocessor_count(a.device.id), tile, split_k)
    if splits > 1 and splits * out.size > _MAX_ELEMENTS:
        raise ValueError(f"conv2d_{gemm}: the split-K workspace would have {splits * out.size} elements, more "
                         f"than {_MAX_ELEMENTS}; pass a smaller split_k")
    with a.device:
        target = out if splits == 1 else cupy.empty((splits,) + tuple(out.shape), dtype=np.float32)
    args = (a, b, target) + tuple(np.int32(v) for v in geometry) + (np.int32(k_per_split),)
    _launch("conv2d", f"conv2d_{gemm}_{tile}", (tiles, splits, 1), (threads, 1, 1), args)
    if splits > 1:
        blocks = min(math.ceil(out.size / 256), 65535)
        _launch("conv2d", "split_k_sum", (blocks, 1, 1), (256, 1, 1),
                (target, out, np.int32(out.size), np.int32(splits)))
    return out


def _stride_covers_kernel_exactly(geometry):
    """True when stride == kernel size and dilation 1: every output pixel gets at most one tap."""
    KH, KW, sh, sw, dh, dw = geometry[5], geometry[6], geometry[9], geometry[10], geometry[13], geometry[14]
    return (sh, sw) == (KH, KW) and (dh, dw) == (1, 1)


def _backward_input_as_gemm(grad_y, weight, out, geometry, tile, split_k):
    """conv2d_backward_input when stride == kernel (UNet's 2x2 up-sampling): one plain GEMM and a scatter.

    Input pixel (h, w) = (oh*sh - ph + r, ow*sw - pw + s) gets exactly one tap, so
        cols[n, (c, r, s), oh, ow] = sum_o weight[o, c, r, s] * grad_y[n, o, oh, ow]
    is a 1x1 convolution of grad_y with weight viewed as (C*KH*KW, O), and grad_x is cols with (r, s)
    interleaved into (oh, ow), cropped by the padding (zero where no tap lands). The implicit GEMM would
    instead visit KH*KW taps per pixel of which one hits.
    """
    cupy = _cupy()
    N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw = geometry[:13]
    with grad_y.device:
        weight_1x1 = cupy.ascontiguousarray(weight.reshape(O, C * KH * KW).T).reshape(C * KH * KW, O, 1, 1)
        cols = conv2d_forward(grad_y, weight_1x1, 1, 0, 1, tile=tile, split_k=split_k)
        full = cols.reshape(N, C, KH, KW, OH, OW).transpose(0, 1, 4, 2, 5, 3).reshape(N, C, OH * KH, OW * KW)
        rows, columns = max(0, min(H, OH * KH - ph)), max(0, min(W, OW * KW - pw))  # where some tap lands
        if rows < H or columns < W:
            out.fill(0)
        out[:, :, :rows, :columns] = full[:, :, ph:ph + rows, pw:pw + columns]
    return out


def conv2d_forward(x, weight, stride, padding, dilation, *, out=None, tile=None, split_k=None):
    """y (N, O, OH, OW) = the convolution of x (N, C, H, W) with weight (O, C, KH, KW), no bias.

    ``out``: write into this float32 array instead of a new one. ``tile`` (a CONV_TILES name)
    and ``split_k`` override the automatic choice (for tests and tuning).
    """
    where = "conv2d_forward"
    x = _check_array(where, "x", x, np.float32, ndim=4)
    weight = _check_array(where, "weight", weight, np.float32, ndim=4)
    geometry = _conv_geometry(where, x.shape, weight.shape, stride, padding, dilation)
    N, C, H, W, O, KH, KW, OH, OW = geometry[:9]
    out = _output(where, out, (N, O, OH, OW), x)
    if out.size == 0:
        return out
    return _conv_gemm("forward", x, weight, out, geometry, N * OH * OW, O, C * KH * KW, tile, split_k)


def conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation, *, out=None, tile=None,
                          split_k=None):
    """grad_x (x_shape) = d(sum(grad_y * conv2d(x, weight)))/dx: the transposed convolution of grad_y.

    Also the forward of ``conv_transpose2d`` (with x_shape its output shape).
    """
    where = "conv2d_backward_input"
    grad_y = _check_array(where, "grad_y", grad_y, np.float32, ndim=4)
    weight = _check_array(where, "weight", weight, np.float32, ndim=4)
    if len(x_shape) != 4:
        raise ValueError(f"{where}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    geometry = _conv_geometry(where, x_shape, weight.shape, stride, padding, dilation)
    N, C, H, W, O, KH, KW, OH, OW = geometry[:9]
    if tuple(grad_y.shape) != (N, O, OH, OW):
        raise ValueError(f"{where}: grad_y has shape {tuple(grad_y.shape)} but a convolution of {tuple(x_shape)} "
                         f"with weight {tuple(weight.shape)} gives {(N, O, OH, OW)}")
    out = _output(where, out, (N, C, H, W), grad_y)
    if out.size == 0:
        return out
    if _stride_covers_kernel_exactly(geometry):
        return _backward_input_as_gemm(grad_y, weight, out, geometry, tile, split_k)
    return _conv_gemm("backward_input", grad_y, weight, out, geometry, N * H * W, C, O * KH * KW, tile, split_k)


def conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation, *, out=None, tile=None,
                           split_k=None):
    """grad_weight (weight_shape) = d(sum(grad_y * conv2d(x, weight)))/dweight.

    Also the weight gradient of ``conv_transpose2d``, called with x and y swapped.
    """
    where = "conv2d_backward_weight"
    x = _check_array(where, "x", x, np.float32, ndim=4)
    grad_y = _check_array(where, "grad_y", grad_y, np.float32, ndim=4)
    if len(weight_shape) != 4:
        raise ValueError(f"{where}: weight_shape must be (O, C, KH, KW), got {tuple(weight_shape)}")
    geometry = _conv_geometry(where, x.shape, weight_shape, stride, padding, dilation)
    N, C, H, W, O, KH, KW, OH, OW = geometry[:9]
    if tuple(grad_y.shape) != (N, O, OH, OW):
        raise ValueError(f"{where}: grad_y has shape {tuple(grad_y.shape)} but a convolution of {tuple(x.shape)} "
                         f"with a {tuple(weight_shape)} weight gives {(N, O, OH, OW)}")
    out = _output(where, out, (O, C, KH, KW), x)
    if out.size == 0:
        return out
    return _conv_gemm("backward_weight", x, grad_y, out, geometry, O, C * KH * KW, N * OH * OW, tile, split_k)


# --- fused softmax + cross-entropy ---------------------------------------------------------------
def _check_cross_entropy_args(where, logits, target, class_weight, ignore_index):
    logits = _check_array(where, "logits", logits, np.float32)
    target = _check_array(where, "target", target, np.int64)
    if logits.ndim < 2 or tuple(target.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f"{where}: target must have shape (N, *spatial) = "
                         f"{(logits.shape[0],) + tuple(logits.shape[2:])} for logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    if class_weight is not None:
        class_weight = _check_array(where, "class_weight", class_weight, np.float32, ndim=1)
        if class_weight.shape[0] != logits.shape[1]:
            raise ValueError(f"{where}: class_weight has {class_weight.shape[0]} entries but logits have "
                             f"{logits.shape[1]} classes")
    if not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{where}: ignore_index must be an int, got {ignore_index!r}")
    N, C = int(logits.shape[0]), int(logits.shape[1])
    pixels_per_image = int(np.prod(logits.shape[2:], dtype=np.int64))
    use_class_weight = class_weight is not None
    # The kernel ignores its class_weight pointer when use_class_weight is 0; any array will do.
    tail = (np.int32(N), np.int32(C), np.int32(pixels_per_image), np.int64(ignore_index))
    grid = (max(1, math.ceil(N * pixels_per_image / _CE_THREADS)), 1, 1)
    return logits, target, (class_weight if use_class_weight else logits), np.int32(use_class_weight), tail, grid


def _cross_entropy_kernel(direction, classes):
    """The smallest softmax_cross_entropy_<direction>_c<MAX_C> that holds ``classes`` in registers, else the
    plain (chunked) one."""
    fitting = [c for c in _CE_REGISTER_VARIANTS if classes <= c]
    return f"softmax_cross_entropy_{direction}" + (f"_c{fitting[0]}" if fitting else "")


def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, *, out=None):
    """(loss, pixel_weight), each shaped like target: loss = pixel_weight * (logsumexp_c logits - logits[target]).

    logits (N, C, H, W) float32, target (N, H, W) int64, class_weight (C,) float32 or None.
    pixel_weight = class_weight[target] (1 if None), 0 where target == ignore_index (and loss 0 there);
    a target outside [0, C) that is not ignore_index gives NaN. ``out``: a (loss, pixel_weight) pair
    to write into.
    """
    where = "softmax_cross_entropy_forward"
    logits, target, weight_arg, use_weight, tail, grid = _check_cross_entropy_args(
        where, logits, target, class_weight, ignore_index)
    loss_out, weight_out = (None, None) if out is None else out
    loss = _output(where, loss_out, target.shape, logits, name="out[0] (loss)")
    pixel_weight = _output(where, weight_out, target.shape, logits, name="out[1] (pixel_weight)")
    if loss.size == 0:
        return loss, pixel_weight
    _launch("softmax_cross_entropy", _cross_entropy_kernel("forward", logits.shape[1]), grid, (_CE_THREADS, 1, 1),
            (logits, target, weight_arg, use_weight, loss, pixel_weight) + tail)
    return loss, pixel_weight


def softmax_cross_entropy_backward(logits, target, class_weight, ignore_index, grad_loss, *, out=None):
    """grad_logits = grad_loss * pixel_weight * (softmax_c(logits) - one_hot(target)), shaped like logits.

    grad_loss (N, H, W) float32 is d(loss)/d(per-pixel loss); ``out``: array to write into.
    """
    where = "softmax_cross_entropy_backward"
    logits, target, weight_arg, use_weight, tail, grid = _check_cross_entropy_args(
        where, logits, target, class_weight, ignore_index)
    grad_loss = _check_array(where, "grad_loss", grad_loss, np.float32)
    if tuple(grad_loss.shape) != tuple(target.shape):
        raise ValueError(f"{where}: grad_loss must have the target's shape {tuple(target.shape)}, "
                         f"got {tuple(grad_loss.shape)}")
    grad_logits = _output(where, out, logits.shape, logits)
    if grad_logits.size == 0:
        return grad_logits
    _launch("softmax_cross_entropy", _cross_entropy_kernel("backward", logits.shape[1]), grid, (_CE_THREADS, 1, 1),
            (logits, target, weight_arg, use_weight, grad_loss, grad_logits) + tail)
    return grad_logits
