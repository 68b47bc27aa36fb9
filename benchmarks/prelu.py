"""How fast is minseg's PReLU (ENet's activation) on the CPU, next to a mask-and-select version and PyTorch's?

    python benchmarks/prelu.py [--runs 25] [--warmup 5] [--no-torch]

Float32, one slope per channel, the five shapes ENet's 67 PReLUs meet at batch 8 on 96×128 images
(``benchmarks/history.py``'s setting, where ENet's training step is measured). For each case: the
median time of several runs after warm-up, in ms and GFLOP/s, for

* minseg: ``F.prelu`` forward, and forward + backward (gradients of x and of the slopes);
* where: the same numbers computed with masks and selects (``where(x > 0, x, a·x)``, ``where`` on the
  upstream gradient, a masked product summed over axes (0, 2, 3)), on plain arrays, no autograd;
* torch: ``torch.nn.functional.prelu``, two threads, measured in the same run, and the ratio minseg / torch.

FLOPs: PReLU is a memory-bound elementwise op, so this counts one multiply per element forward and four
backward (grad_x's product, min(x, 0), and the multiply-add of the slope gradient); the rate shows the
elements handled per second more than arithmetic.
"""
import argparse
from pathlib import Path

import numpy as np
from _common import median_ms, optional_torch

import minseg
import minseg.functional as F

# (name, x shape): where in ENet (batch 8, 3×96×128) a PReLU sees it; one step calls these 1, 5, 10, 17
# and 34 times (the downsampling bottlenecks' PReLUs counted with the stage they open)
CASES = [
    ("initial (8,16,48,64)", (8, 16, 48, 64)),
    ("stage 1 out (8,64,24,32)", (8, 64, 24, 32)),
    ("stage 1 internal (8,16,24,32)", (8, 16, 24, 32)),
    ("stage 2-3 out (8,128,12,16)", (8, 128, 12, 16)),
    ("stage 2-3 internal (8,32,12,16)", (8, 32, 12, 16)),
]
FORWARD_FLOPS_PER_ELEMENT, BACKWARD_FLOPS_PER_ELEMENT = 1, 4


def where_prelu(x, weight, grad_y):
    """Forward and both gradients with masks and selects: the plain version ``F.prelu`` is timed against."""
    slope = weight.reshape(1, -1, 1, 1)
    positive = x > 0
    y = np.where(positive, x, x * slope)
    grad_x = np.where(positive, grad_y, grad_y * slope)
    grad_weight = np.where(positive, 0, grad_y * x).sum(axis=(0, 2, 3))
    return y, grad_x, grad_weight


def runners(library, x, weight, grad_y):
    """(forward, forward_backward) closures for one case in ``library`` (minseg or torch)."""
    if library is minseg:
        functional, tensors = F, [minseg.Tensor(a, requires_grad=True) for a in (x, weight)]
    else:
        functional, tensors = library.nn.functional, [library.from_numpy(a).requires_grad_() for a in (x, weight)]
        grad_y = library.from_numpy(grad_y)

    def forward():
        with library.no_grad():
            functional.prelu(*tensors)

    def forward_backward():
        for t in tensors:
            t.grad = None
        functional.prelu(*tensors).backward(grad_y)

    return forward, forward_backward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="time minseg and the where version only")
    args = parser.parse_args()
    torch = None if args.no_torch else optional_torch()

    rng = np.random.default_rng(0)
    print(f"minseg from {Path(minseg.__file__).parent}; NumPy {np.__version__}")
    header = f"{'case':32s} {'pass':8s} {'minseg ms':>9s} {'GFLOP/s':>8s} {'where ms':>9s}"
    if torch is not None:
        header += f" {'torch ms':>9s} {'GFLOP/s':>8s} {'ratio':>6s}"
    print(header)
    for name, shape in CASES:
        x = rng.standard_normal(shape, dtype=np.float32)
        weight = np.full(shape[1], 0.25, np.float32)
        grad_y = rng.standard_normal(shape, dtype=np.float32)
        ours = runners(minseg, x, weight, grad_y)
        theirs = runners(torch, x, weight, grad_y) if torch is not None else (None, None)
        where = (lambda: np.where(x > 0, x, x * weight.reshape(1, -1, 1, 1)), lambda: where_prelu(x, weight, grad_y))
        flops = [FORWARD_FLOPS_PER_ELEMENT * x.size, (FORWARD_FLOPS_PER_ELEMENT + BACKWARD_FLOPS_PER_ELEMENT) * x.size]
        for pass_name, mine, plain, torch_fn, pass_flops in zip(("fwd", "fwd+bwd"), ours, where, theirs, flops):
            ms = median_ms(mine, args.runs, args.warmup)
            line = (f"{name:32s} {pass_name:8s} {ms:9.3f} {pass_flops / ms / 1e6:8.2f} "
                    f"{median_ms(plain, args.runs, args.warmup):9.3f}")
            if torch_fn is not None:
                torch_ms = median_ms(torch_fn, args.runs, args.warmup)
                line += f" {torch_ms:9.3f} {pass_flops / torch_ms / 1e6:8.2f} {ms / torch_ms:6.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
