"""How fast are minseg's convolutions and bilinear resize on the CPU, next to PyTorch's?

    python benchmarks/layers.py [--runs 15] [--warmup 3] [--no-torch]

Float32, the shapes a UNet meets at batch 8 on 96×128 images. For each case: the
median time of several runs after warm-up, the GFLOP/s that makes, and, when PyTorch
is installed, PyTorch CPU's time for the same case measured in the same run (two
threads, like NumPy's BLAS here) and the ratio minseg / PyTorch.

"fwd+bwd" is one forward pass and one backward pass computing the gradients of the
input, the weight and the bias. "GEMM only" (convolutions) times just the one matrix
product minseg's forward is built on, W.reshape(O, C·kh·kw) @ im2col(x), with the im2col
matrix made beforehand: no im2col + GEMM forward can beat it with this BLAS, so its ratio
is the floor for that approach (compared with PyTorch's forward time from the row above);
the row ends with minseg's forward time over it ("fwd/GEMM": what the forward costs beyond its product).
"torchGEMM" times that same product with PyTorch's matmul on its own BLAS (MKL in the x86 wheels), in the
minseg columns: "GEMM only/torchGEMM" is how much of the gap is NumPy's BLAS (OpenBLAS) alone.
"col write" times only writing the whole batch's im2col matrix once (a fill, GB/s), so
(GEMM + col write)/GEMM is the best fwd/GEMM an im2col + GEMM forward that builds that whole
matrix can reach. minseg's forward builds it in chunks small enough to stay in cache
(conv_numpy._cols), which can beat that; GEMM only and col write stay whole-batch.
A depthwise convolution (one input channel per group) is the same im2col + grouped product,
each group's a kh·kw-term one.

FLOPs count multiply-adds as two: a convolution's forward is 2·N·O·(C/groups)·kh·kw·Ho·Wo,
the backward twice that (input and weight gradients). A bilinear resize mixes four input
pixels into each output pixel: 8 FLOPs per output element, and as many again backward.
"""
import argparse
from pathlib import Path

import numpy as np
from _common import median_ms, optional_torch

import minseg
import minseg.functional as F
from minseg.functional.conv_numpy import FOLD_BATCH_BELOW
from minseg.functional.im2col import conv_output_size, im2col

# (name, kind, x shape, weight shape (None: no weight), keyword arguments)
CASES = [
    ("conv3x3 (8,32,96,128)->32", "conv", (8, 32, 96, 128), (32, 32, 3, 3), dict(padding=1)),
    ("conv3x3 (8,128,24,32)->128", "conv", (8, 128, 24, 32), (128, 128, 3, 3), dict(padding=1)),
    ("conv3x3 (8,512,6,8)->512", "conv", (8, 512, 6, 8), (512, 512, 3, 3), dict(padding=1)),
    ("conv3x3 g2 (8,128,24,32)->128", "conv", (8, 128, 24, 32), (128, 64, 3, 3), dict(padding=1, groups=2)),
    ("dwconv3x3 (8,128,24,32)", "conv", (8, 128, 24, 32), (128, 1, 3, 3), dict(padding=1, groups=128)),
    ("convT k2s2 (8,64,24,32)->32", "conv_transpose", (8, 64, 24, 32), (64, 32, 2, 2), dict(stride=2)),
    ("bilinear x2 (8,64,48,64)", "bilinear", (8, 64, 48, 64), None, dict(align_corners=False)),
    ("bilinear x2 ac (8,64,48,64)", "bilinear", (8, 64, 48, 64), None, dict(align_corners=True)),
]


def forward_flops(kind, x_shape, weight_shape, y_shape):
    if kind == "bilinear":  # four taps per output element
        return 8 * np.prod(y_shape, dtype=np.int64)
    if kind == "conv":  # every output element: C·kh·kw multiply-adds
        return 2 * np.prod(y_shape, dtype=np.int64) * np.prod(weight_shape[1:], dtype=np.int64)
    return 2 * np.prod(x_shape, dtype=np.int64) * np.prod(weight_shape[1:], dtype=np.int64)  # every input element


def operation(library_functional, kind):
    """The call a case times, as ``op(*arrays, **kwargs)``, in minseg's or PyTorch's functional API."""
    if kind == "bilinear":
        return lambda x, **kwargs: library_functional.interpolate(x, scale_factor=2, mode="bilinear", **kwargs)
    return library_functional.conv2d if kind == "conv" else library_functional.conv_transpose2d


def runners(library, kind, arrays, grad_y, kwargs):
    """(forward, forward_backward): closures that time one case in ``library`` (minseg or torch)."""
    if library is minseg:
        functional, tensors = F, [minseg.Tensor(a, requires_grad=True) for a in arrays]
    else:
        functional, tensors = library.nn.functional, [library.from_numpy(a).requires_grad_() for a in arrays]
        grad_y = library.from_numpy(grad_y)
    op = operation(functional, kind)

    def forward():
        with library.no_grad():
            op(*tensors, **kwargs)

    def forward_backward():
        for t in tensors:
            t.grad = None
        op(*tensors, **kwargs).backward(grad_y)

    return forward, forward_backward


def gemm_operands(x, weight, kwargs):
    """(weight per group, im2col(x)): the two matrices of the forward's product, in the layout conv2d uses here."""
    kernel_size, groups = weight.shape[2:], kwargs.get("groups", 1)
    pairs = [(kwargs.get(key, default),) * 2 for key, default in (("stride", 1), ("padding", 0), ("dilation", 1))]
    n, _, h, w = x.shape
    ho, wo = (conv_output_size(size, k, s, p, d) for size, k, s, p, d in zip((h, w), kernel_size, *pairs))
    folded = ho * wo < FOLD_BATCH_BELOW
    col = im2col(x, kernel_size, *pairs, fold_batch=folded)
    col = col.reshape(groups, -1, n * ho * wo) if folded else col.reshape(n, groups, -1, ho * wo)
    return weight.reshape(groups, weight.shape[0] // groups, -1), np.ascontiguousarray(col)


def gemm_only_runner(x, weight, kwargs):
    """The forward's matrix product alone, per group, in the layout conv2d uses for this shape (see conv_numpy.py)."""
    weight_by_group, col = gemm_operands(x, weight, kwargs)
    out = np.matmul(weight_by_group, col)
    return lambda: np.matmul(weight_by_group, col, out=out)


def torch_gemm_runner(torch, x, weight, kwargs):
    """The same product by PyTorch's matmul, on its own BLAS (MKL in the x86 wheels): how much is the BLAS."""
    weight_by_group, col = (torch.from_numpy(array) for array in gemm_operands(x, weight, kwargs))
    out = torch.matmul(weight_by_group, col)
    return lambda: torch.matmul(weight_by_group, col, out=out)


def col_write_runner(x, weight, kwargs):
    """Writing the bytes of the forward's im2col matrix once (a fill): what any im2col + GEMM forward pays at least."""
    kernel_size = weight.shape[2:]
    pairs = [(kwargs.get(key, default),) * 2 for key, default in (("stride", 1), ("padding", 0), ("dilation", 1))]
    col = np.empty_like(im2col(x, kernel_size, *pairs))
    return lambda: col.fill(1.0), col.nbytes


def blas_summary(rng):
    """Which BLAS NumPy uses and its float32 matrix-product speed: the ceiling for im2col + GEMM."""
    a, b = (rng.standard_normal((2048, 2048), dtype=np.float32) for _ in range(2))
    ms = median_ms(lambda: a @ b, runs=5, warmup=1)
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return (f"NumPy {np.__version__}, BLAS {blas.get('name')} {blas.get('version')}: "
            f"float32 2048x2048 @ 2048x2048 runs at {2 * 2048 ** 3 / ms / 1e6:.0f} GFLOP/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="time minseg only")
    args = parser.parse_args()
    torch = None if args.no_torch else optional_torch()

    rng = np.random.default_rng(0)
    print(f"minseg from {Path(minseg.__file__).parent}; {blas_summary(rng)}")
    header = f"{'case':30s} {'pass':9s} {'minseg ms':>9s} {'GFLOP/s':>8s}"
    if torch is not None:
        header += f" {'torch ms':>9s} {'GFLOP/s':>8s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for name, kind, x_shape, weight_shape, kwargs in CASES:
        arrays = [rng.standard_normal(x_shape, dtype=np.float32)]
        if weight_shape is not None:
            out_channels = weight_shape[0] if kind == "conv" else weight_shape[1] * kwargs.get("groups", 1)
            arrays += [rng.standard_normal(weight_shape, dtype=np.float32) * np.float32(0.05),
                       rng.standard_normal(out_channels, dtype=np.float32)]
        try:
            with minseg.no_grad():
                y_shape = operation(F, kind)(*arrays, **kwargs).shape
        except (NotImplementedError, TypeError) as error:  # an option this version lacks
            print(f"{name:30s} (minseg: {error})")
            continue
        grad_y = rng.standard_normal(y_shape, dtype=np.float32)
        flops = forward_flops(kind, x_shape, weight_shape, y_shape)

        ours = runners(minseg, kind, arrays, grad_y, kwargs)
        theirs = runners(torch, kind, arrays, grad_y, kwargs) if torch is not None else (None, None)
        backward_flops = flops if kind == "bilinear" else 2 * flops
        passes = [("fwd", ours[0], theirs[0], flops), ("fwd+bwd", ours[1], theirs[1], flops + backward_flops)]
        if kind == "conv":
            passes.append(("GEMM only", gemm_only_runner(*arrays[:2], kwargs), "fwd", flops))
            if torch is not None:
                passes.append(("torchGEMM", torch_gemm_runner(torch, *arrays[:2], kwargs), None, flops))
            write, nbytes = col_write_runner(*arrays[:2], kwargs)
            passes.append(("col write", write, None, nbytes))
        torch_ms_of, minseg_ms_of = {}, {}
        for pass_name, mine, torch_fn, pass_flops in passes:
            ms = median_ms(mine, args.runs, args.warmup)
            if pass_name == "col write":  # pass_flops is the matrix's size in bytes here
                gemm_ms = minseg_ms_of["GEMM only"]
                print(f"{name:30s} {pass_name:9s} {ms:9.2f} {pass_flops / ms / 1e6:6.1f} GB/s  "
                      f"(GEMM + col write)/GEMM {(gemm_ms + ms) / gemm_ms:.2f}", flush=True)
                continue
            if pass_name == "torchGEMM":  # PyTorch's time for minseg's product, in the minseg columns
                print(f"{name:30s} {pass_name:9s} {ms:9.2f} {pass_flops / ms / 1e6:8.1f}  "
                      f"GEMM only/torchGEMM {minseg_ms_of['GEMM only'] / ms:.2f}", flush=True)
                continue
            line = f"{name:30s} {pass_name:9s} {ms:9.2f} {pass_flops / ms / 1e6:8.1f}"
            if isinstance(torch_fn, str):  # compared with the time PyTorch took for that pass
                torch_ms = torch_ms_of.get(torch_fn)
            elif torch_fn is not None:
                torch_ms = torch_ms_of[pass_name] = median_ms(torch_fn, args.runs, args.warmup)
            else:
                torch_ms = None
            if torch_ms is not None:
                line += f" {torch_ms:9.2f} {pass_flops / torch_ms / 1e6:8.1f} {ms / torch_ms:6.2f}"
            minseg_ms_of[pass_name] = ms
            if pass_name == "GEMM only":
                line += f"  fwd/GEMM {minseg_ms_of['fwd'] / ms:.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
