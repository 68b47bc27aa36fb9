"""What DeepLab's output stride 8 costs against 16: convolution arithmetic and memory of one training step.

    python benchmarks/output_stride.py                      # DeepLab v2 on ResNet-18, batch 8 of 96x128
    python benchmarks/output_stride.py --model deeplabv3 --batch 2 --size 64x96

No timing: it counts, so the numbers do not depend on what else the machine runs. For each output stride it
reports the multiply-adds of every convolution as computed (a dilated conv that skips the taps reading only
padding, ``AtrousConv2d``, is counted with the taps it keeps), the bytes of the convolutions' outputs (the
activations a backward pass keeps, roughly), and the peak of NumPy's allocations during one forward and backward
(``tracemalloc``, which NumPy reports its buffers to).
"""
import argparse
import tracemalloc

import numpy as np

import minseg
import minseg.functional as F
from minseg.models import create


def measure(model_name, encoder, output_stride, batch, size, classes=32):
    minseg.manual_seed(0)
    model = create(model_name, classes, encoder=encoder, encoder_output_stride=output_stride)
    counts = {"multiply_adds": 0, "conv_output_bytes": 0}
    conv2d = F.conv2d

    def counting_conv2d(x, weight, *args, **kwargs):
        y = conv2d(x, weight, *args, **kwargs)
        counts["multiply_adds"] += int(np.prod(weight.shape)) * y.shape[0] * y.shape[2] * y.shape[3]
        counts["conv_output_bytes"] += y.data.nbytes
        return y

    rng = np.random.default_rng(0)
    x = minseg.Tensor(rng.standard_normal((batch, 3) + size).astype(np.float32))
    target = minseg.Tensor(rng.integers(0, classes, size=(batch,) + size))
    F.conv2d = counting_conv2d
    tracemalloc.start()
    try:
        F.cross_entropy(model(x), target).backward()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        F.conv2d = conv2d
    return {**counts, "peak_bytes": peak}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv2", choices=["deeplabv2", "deeplabv3"])
    parser.add_argument("--encoder", default="resnet18", choices=["resnet18", "resnet34"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="96x128", help="HxW, multiples of 16")
    args = parser.parse_args(argv)
    size = tuple(int(part) for part in args.size.split("x"))
    results = {stride: measure(args.model, args.encoder, stride, args.batch, size) for stride in (16, 8)}
    print(f"{args.model} {args.encoder}, one training step on a batch of {args.batch} of {size[0]}x{size[1]}:")
    print(f"{'output stride':>14}{'conv GMAC (forward)':>22}{'conv outputs (MB)':>20}{'peak memory (MB)':>19}")
    for stride, r in results.items():
        print(f"{stride:>14}{r['multiply_adds'] / 1e9:>22.2f}{r['conv_output_bytes'] / 1e6:>20.1f}"
              f"{r['peak_bytes'] / 1e6:>19.1f}")
    ratio = {key: results[8][key] / results[16][key] for key in results[8]}
    print(f"{'8 / 16':>14}{ratio['multiply_adds']:>22.2f}{ratio['conv_output_bytes']:>20.2f}"
          f"{ratio['peak_bytes']:>19.2f}")


if __name__ == "__main__":
    main()
