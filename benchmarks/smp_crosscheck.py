"""minseg's encoder models against segmentation_models_pytorch itself: same weights in, same scores out.

    python benchmarks/smp_crosscheck.py

For each model and encoder: build smp's model (``encoder_weights=None``, so nothing is downloaded) with random
weights, including random BatchNorm running statistics (fresh ones, 0 and 1, would hide a mix-up of mean and
variance), write its ``state_dict()`` to a .safetensors file with ``safetensors.torch``, load that file into
``minseg.models.create(name, classes, encoder=...)`` with ``load_weights(..., strict=True)`` (which fails unless
every key and shape matches), and compare the eval-mode outputs on the same random batch.

"worst rel. diff." is max |minseg − smp| / max |smp| over the whole output, in float32. Needs torch and smp
(imported only here, never by minseg).

    python benchmarks/smp_crosscheck.py --fingerprints   # the SMP table of tests/test_encoder_models.py
"""
import argparse
import hashlib
import os
import tempfile
import time

import numpy as np
from _common import SMP_CLASSES

ENCODERS = ("resnet18", "resnet34", "densenet121", "inceptionv4")
# smp (and minseg) build DeepLab only on encoders with a dilated mode; the others downsample by pooling.
DILATED_ONLY = {"deeplabv3": ("resnet18", "resnet34"), "deeplabv3plus": ("resnet18", "resnet34")}


def cases(models, encoders):
    """(model, encoder) pairs to run: every model on every encoder it accepts."""
    return [(name, encoder) for name in models for encoder in encoders if encoder in DILATED_ONLY.get(name, encoders)]


def randomize(model, torch):
    """Random parameters and BatchNorm/GroupNorm statistics, so that every term of every layer shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype == torch.int64:           # num_batches_tracked
                tensor.fill_(int(torch.randint(0, 1000, (), generator=generator)))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.ndim == 1:                     # a norm's scale
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:                                      # conv weights: keep smp's init scale, new values
                tensor.copy_(tensor.std() * torch.randn(tensor.shape, generator=generator))


def compare(name, encoder, batch, height, width, classes, directory):
    import segmentation_models_pytorch as smp
    import torch
    from safetensors.torch import save_file

    import minseg
    from minseg.models import create, load_weights

    torch.manual_seed(0)
    reference = getattr(smp, SMP_CLASSES[name])(encoder, encoder_weights=None, classes=classes).eval()
    randomize(reference, torch)
    path = os.path.join(directory, f"{name}-{encoder}.safetensors")
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, path)

    model = create(name, classes, encoder=encoder)
    load_weights(model, path, strict=True)
    model.eval()
    x = np.random.default_rng(1).standard_normal((batch, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    with minseg.no_grad():
        got = model(minseg.Tensor(x)).numpy()
    if got.shape != expected.shape:
        return f"shape {got.shape} vs smp {expected.shape}", None
    worst = float(np.abs(got - expected).max() / np.abs(expected).max())
    return worst, sum(p.size for p in model.parameters())


def fingerprints(models, encoders, classes=32):
    """Per model and encoder: smp's parameter count, state-dict entries and sha256 of its sorted "name shape" lines."""
    import segmentation_models_pytorch as smp

    for name, encoder in cases(models, encoders):
        model = getattr(smp, SMP_CLASSES[name])(encoder, encoder_weights=None, classes=classes)
        state = model.state_dict()
        lines = "\n".join(f"{key} {tuple(value.shape)}" for key, value in sorted(state.items()))
        digest = hashlib.sha256(lines.encode()).hexdigest()[:16]
        parameters = sum(p.numel() for p in model.parameters())
        print(f'    ("{name}", "{encoder}"): ({parameters:_}, {len(state)}, "{digest}"),')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--classes", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=list(SMP_CLASSES), choices=list(SMP_CLASSES))
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--fingerprints", action="store_true", help="print smp's state-dict fingerprints and stop")
    args = parser.parse_args()
    if args.fingerprints:
        return fingerprints(args.models, args.encoders, args.classes)
    import segmentation_models_pytorch as smp
    import torch
    torch.set_num_threads(2)
    print(f"smp {smp.__version__}, torch {torch.__version__}; batch {args.batch}, 3x{args.size[0]}x{args.size[1]}, "
          f"{args.classes} classes, float32, eval mode, random weights and BatchNorm statistics")
    print(f"{'model':<16}{'encoder':<13}{'parameters':>12}{'worst rel. diff.':>18}{'seconds':>9}")
    with tempfile.TemporaryDirectory() as directory:
        for name, encoder in cases(args.models, args.encoders):
            start = time.perf_counter()
            worst, parameters = compare(name, encoder, args.batch, *args.size, args.classes, directory)
            shown = f"{worst:.2e}" if isinstance(worst, float) else worst
            print(f"{name:<16}{encoder:<13}{parameters or 0:>12,}{shown:>18}{time.perf_counter() - start:>9.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
