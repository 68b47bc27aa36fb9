"""GPU speed: minseg's CUDA kernels and a UNet training step beside PyTorch (cuDNN, float32, TF32 off).

    python benchmarks/gpu.py                 # everything
    python benchmarks/gpu.py --only conv     # or ce, unet

Every number is the median of --runs timings after --warmup untimed calls (kernel compilation, cuDNN's
algorithm search, memory pools). A timing is --calls back-to-back calls between two CUDA events recorded
on the stream, divided by --calls: the GPU queue stays full, so the host's work between launches (argument
checks, allocation) is hidden as it is in a training loop, and a small shape's time is the kernels'. The
UNet step is timed one call per event pair: its host work is part of a step.
PyTorch runs in the same process on the same GPU with cudnn.benchmark on and TF32 off for both
convolutions and matmuls, so both sides compute in true float32. "ratio" is PyTorch's time over
minseg's: above 1, minseg is faster.

* conv: 3x3, padding 1, stride 1. forward = conv2d_forward, backward = conv2d_backward_input +
  conv2d_backward_weight, against F.conv2d and aten.convolution_backward (cuDNN's data and filter
  gradients). FLOPs per pass: 2·N·O·H·W·C·9.
* ce: forward + backward of a mean cross-entropy. minseg: the two fused kernels plus the two sums and
  the broadcast that a mean reduction needs; PyTorch: F.cross_entropy(...).backward(). Effective
  bandwidth counts the 3 unavoidable passes over the logits (forward read, backward read and write).
* unet: one SGD training step (zero_grad, forward, cross-entropy, backward, step) of a base-32 UNet
  at batch 64, 96x128, 32 classes; PyTorch builds the same definition (benchmarks/twins.py).

Needs CuPy and an NVIDIA GPU; PyTorch with CUDA is optional (its columns read "-" without it).
"""
import argparse
import statistics
import sys

import numpy as np

import minseg
from minseg import backend, cuda

CONV_CASES = [(8, 32, 96, 128, 32), (8, 128, 24, 32, 128), (8, 512, 6, 8, 512), (64, 32, 96, 128, 32),
              (8, 64, 360, 480, 64)]  # (N, C, H, W) -> O
CE_CASES = [(8, 32, 96, 128), (64, 32, 360, 480)]
UNET = dict(batch=64, height=96, width=128, classes=32, base=32)
LR, MOMENTUM = 0.01, 0.9


# --- timing ------------------------------------------------------------------------------------
def median_ms_cupy(fn, warmup, runs, calls):
    """Median over ``runs`` of the time of ``calls`` back-to-back calls of fn between two events, per call."""
    import cupy
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(runs):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / calls)
    return statistics.median(times)


def median_ms_torch(fn, warmup, runs, calls):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def load_torch():
    """PyTorch on the GPU in true float32, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths]] + rows:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(line, widths)))
    print()


# --- convolution ---------------------------------------------------------------------------------
def bench_conv(torch, warmup, runs, calls):
    import cupy
    rows = []
    for case in CONV_CASES:
        rows += conv_rows(torch, warmup, runs, calls, *case)
        cupy.get_default_memory_pool().free_all_blocks()  # the case's arrays died with conv_rows
    print("convolution 3x3 pad 1 (float32)")
    print_table(["case", "pass", "minseg ms", "TFLOP/s", "cuDNN ms", "TFLOP/s", "ratio"], rows)


def conv_rows(torch, warmup, runs, calls, N, C, H, W, O):
    import cupy
    rows = []
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    weight = rng.standard_normal((O, C, 3, 3), dtype=np.float32) * (1 / (9 * C)) ** 0.5
    grad_y = rng.standard_normal((N, O, H, W), dtype=np.float32)
    args = ((1, 1), (1, 1), (1, 1))
    ours = {
        "forward": lambda: cuda.conv2d_forward(x, weight, *args),
        "backward": lambda: (cuda.conv2d_backward_input(grad_y, weight, x.shape, *args),
                             cuda.conv2d_backward_weight(x, grad_y, weight.shape, *args)),
    }
    ours["forward+backward"] = lambda: (ours["forward"](), ours["backward"]())
    theirs = {}
    if torch is not None:
        tx, tw, tgy = (torch.as_tensor(a, device="cuda") for a in (x, weight, grad_y))
        theirs = {
            "forward": lambda: torch.nn.functional.conv2d(tx, tw, None, 1, 1, 1),
            "backward": lambda: torch.ops.aten.convolution_backward(
                tgy, tx, tw, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False]),
        }
        theirs["forward+backward"] = lambda: (theirs["forward"](), theirs["backward"]())
    flop_per_pass = 2 * N * O * H * W * C * 9
    for part, passes in (("forward", 1), ("backward", 2), ("forward+backward", 3)):
        ms = median_ms_cupy(ours[part], warmup, runs, calls)
        torch_ms = median_ms_torch(theirs[part], warmup, runs, calls) if theirs else None
        tflops = passes * flop_per_pass / ms / 1e9
        torch_tflops = passes * flop_per_pass / torch_ms / 1e9 if torch_ms else None
        rows.append([f"({N},{C},{H},{W})->{O}", part, fmt(ms, 3), fmt(tflops), fmt(torch_ms, 3),
                     fmt(torch_tflops), fmt(torch_ms / ms if torch_ms else None)])
    return rows


# --- fused cross-entropy -------------------------------------------------------------------------
def bench_cross_entropy(torch, warmup, runs, calls):
    import cupy
    rows = []
    for case in CE_CASES:
        rows += cross_entropy_rows(torch, warmup, runs, calls, *case)
        cupy.get_default_memory_pool().free_all_blocks()
    print("softmax cross-entropy, forward + backward (effective TB/s = 3 x logits bytes / time)")
    print_table(["case", "minseg", "ms", "TB/s", "PyTorch ms", "TB/s", "ratio"], rows)


def cross_entropy_rows(torch, warmup, runs, calls, N, C, H, W):
    import cupy
    rows = []
    rng = cupy.random.default_rng(0)
    logits = rng.standard_normal((N, C, H, W), dtype=np.float32)
    target = rng.integers(0, C, (N, H, W)).astype(np.int64)

    def kernels_only():
        cuda.softmax_cross_entropy_forward(logits, target, None, -100)
        cuda.softmax_cross_entropy_backward(logits, target, None, -100, grad_ones)

    def mean_loss_forward_backward():
        loss, pixel_weight = cuda.softmax_cross_entropy_forward(logits, target, None, -100)
        weight_sum = pixel_weight.sum()
        mean = loss.sum() / weight_sum  # noqa: F841  (what the reduction computes)
        grad_loss = cupy.ascontiguousarray(cupy.broadcast_to(1 / weight_sum, target.shape))
        return cuda.softmax_cross_entropy_backward(logits, target, None, -100, grad_loss)

    grad_ones = cupy.ones((N, H, W), dtype=np.float32)
    torch_ms = None
    if torch is not None:
        t_logits = torch.as_tensor(logits, device="cuda").requires_grad_(True)
        t_target = torch.as_tensor(target, device="cuda")

        def torch_step():
            t_logits.grad = None
            torch.nn.functional.cross_entropy(t_logits, t_target).backward()
        torch_ms = median_ms_torch(torch_step, warmup, runs, calls)
    effective_bytes = 3 * logits.nbytes
    for part, fn in (("kernels", kernels_only), ("mean loss fwd+bwd", mean_loss_forward_backward)):
        ms = median_ms_cupy(fn, warmup, runs, calls)
        shown = torch_ms if part != "kernels" else None
        rows.append([f"({N},{C},{H},{W})", part, fmt(ms, 3), fmt(effective_bytes / ms / 1e9),
                     fmt(shown, 3), fmt(effective_bytes / shown / 1e9 if shown else None),
                     fmt(shown / ms if shown else None)])
    return rows


# --- UNet training step --------------------------------------------------------------------------
def bench_unet(torch, warmup, runs):
    import minseg.functional as F
    from minseg import optim
    from minseg.models import create
    u = UNET
    rng = np.random.default_rng(0)
    images = rng.standard_normal((u["batch"], 3, u["height"], u["width"])).astype(np.float32)
    targets = rng.integers(0, u["classes"], (u["batch"], u["height"], u["width"])).astype(np.int64)

    minseg.manual_seed(0)
    model = create("unet", u["classes"], base=u["base"]).to("cuda")
    optimizer = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x, t = minseg.Tensor(images).to("cuda"), minseg.Tensor(targets).to("cuda")

    def step():
        model.zero_grad()
        F.cross_entropy(model(x), t).backward()
        optimizer.step()
    ms = median_ms_cupy(step, warmup, runs, calls=1)
    n_parameters = sum(int(np.prod(p.shape)) for p in model.parameters())

    torch_ms = torch_parameters = None
    if torch is not None:
        torch.manual_seed(0)
        import twins  # benchmarks/twins.py, beside this script
        t_model = twins.PaperUNet(u["classes"], base=u["base"]).cuda()
        t_optimizer = torch.optim.SGD(t_model.parameters(), lr=LR, momentum=MOMENTUM)
        tx, tt = torch.as_tensor(images, device="cuda"), torch.as_tensor(targets, device="cuda")

        def torch_step():
            t_optimizer.zero_grad()
            torch.nn.functional.cross_entropy(t_model(tx), tt).backward()
            t_optimizer.step()
        torch_ms = median_ms_torch(torch_step, warmup, runs, calls=1)
        torch_parameters = sum(p.numel() for p in t_model.parameters())
    print(f"UNet base {u['base']} training step, batch {u['batch']}, {u['height']}x{u['width']}, "
          f"{u['classes']} classes (SGD momentum {MOMENTUM})")
    print_table(["model", "parameters", "minseg ms", "PyTorch ms", "ratio"],
                [["unet", f"{n_parameters} / {torch_parameters or '-'}", fmt(ms, 2), fmt(torch_ms, 2),
                  fmt(torch_ms / ms if torch_ms else None)]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["conv", "ce", "unet"], action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10, help="back-to-back calls per timing (conv, ce)")
    options = parser.parse_args()
    if not backend.cupy_available():
        sys.exit("benchmarks/gpu.py needs CuPy and an NVIDIA GPU, and this machine has no usable one "
                 "(pip install cupy-cuda12x or cupy-cuda13x on a machine with a GPU). Nothing was measured.")
    import cupy
    torch = load_torch()
    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    print(f"GPU: {properties['name'].decode()}, {properties['multiProcessorCount']} SMs; CuPy {cupy.__version__}; "
          + (f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, TF32 off" if torch else
             "PyTorch with CUDA not available")
          + f"; median of {options.runs} runs of {options.calls} calls after {options.warmup} warm-up\n")
    sections = options.only or ["conv", "ce", "unet"]
    if "conv" in sections:
        bench_conv(torch, options.warmup, options.runs, options.calls)
    if "ce" in sections:
        bench_cross_entropy(torch, options.warmup, options.runs, options.calls)
    if "unet" in sections:
        bench_unet(torch, options.warmup, options.runs)


if __name__ == "__main__":
    main()
