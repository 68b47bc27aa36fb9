"""Speed and memory of the models: forward (eval) and one training step, minseg vs PyTorch CPU.

    python benchmarks/models.py            # the table
    python benchmarks/models.py --models unet-resnet18 fpn-resnet18   # some rows
    python benchmarks/models.py --rounds 3   # each row 3 times, minseg and torch in turn
    python benchmarks/models.py --profile  # where the UNet step spends its time

The first three cases are the from-scratch models, compared with the same definitions written in torch.nn
(``benchmarks/twins.py``).
The "-resnet18" cases are the segmentation_models family, compared with segmentation_models_pytorch's own models
(``encoder_weights=None``) on the same encoder, whose state dicts are the same (benchmarks/smp_crosscheck.py).

Every case (model × forward/step × minseg/torch) runs in its own subprocess so that its
peak resident memory is its own: the number reported is the process's peak resident
set size, VmHWM in /proc/self/status, i.e. everything it ever held at once: the
interpreter, the imported libraries, the model, the optimizer state and the step's
activations. "base" is the resident memory just before the first (warm-up) call.
"others" is the share of the machine's CPU that other programs took during the timed
runs (this machine is shared); a case is re-run while that exceeds 10%.

GFLOP/s counts only convolutions (and transposed convolutions), analytically: a conv
does one multiply-add per weight element per output position, 2·|weight|·N·H_out·W_out
FLOPs (N·H_in·W_in positions for a transposed conv). A training step counts the
forward, the input gradient (not for the first layer, whose input needs none) and the
weight gradient, each as many FLOPs as the forward.
PyTorch (optional, imported only here) builds the SAME definitions and runs on 2 threads.
"""
import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time

import numpy as np
from _common import SMP_CLASSES, have_torch, measured, paired_rounds, timed_runs

BATCH, CHANNELS, HEIGHT, WIDTH, CLASSES = 8, 3, 96, 128, 32
# case → (model name for minseg.models.create, its options)
MODELS = {"naive": ("naive", {}), "unet": ("unet", {"base": 32}), "linknet": ("linknet", {}),
          "unet16": ("unet", {"base": 16})}  # unet16: the example's default width
MODELS.update({f"{name}-resnet18": (name, {"encoder": "resnet18"}) for name in SMP_CLASSES})
LR, MOMENTUM = 0.01, 0.9


def peak_rss_mib():
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across
    fork and exec, so a child started by a big parent would report the parent's size."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def current_rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


# --- minseg ------------------------------------------------------------------------
def minseg_case(name, mode):
    import minseg
    import minseg.functional as F
    from minseg.models import create

    minseg.manual_seed(0)
    model = create(MODELS[name][0], CLASSES, **MODELS[name][1])
    rng = np.random.default_rng(0)
    x = minseg.Tensor(rng.standard_normal((BATCH, CHANNELS, HEIGHT, WIDTH)).astype(np.float32))
    target = minseg.Tensor(rng.integers(0, CLASSES, size=(BATCH, HEIGHT, WIDTH)))
    parameters = list(model.parameters())
    try:
        from minseg.optim import SGD
        optimizer = SGD(parameters, lr=LR, momentum=MOMENTUM)
        sgd_step = optimizer.step
    except ImportError:  # the optimizer module is optional here: plain SGD with momentum
        velocity = [np.zeros_like(p.data) for p in parameters]

        def sgd_step():
            for p, v in zip(parameters, velocity):
                v *= MOMENTUM
                v += p.grad
                p.data -= LR * v

    def forward():
        with minseg.no_grad():
            model(x)

    def step():
        model.zero_grad()
        F.cross_entropy(model(x), target).backward()
        sgd_step()

    if mode == "forward":
        model.eval()
    return model, (forward if mode == "forward" else step)


_flops_cache = {}


def conv_flops(name, mode):
    """Analytic conv FLOPs of one call, recorded by wrapping every conv module's forward.

    Counted on a batch of 2, scaled to BATCH (FLOPs are linear in the batch; a batch of 1 would leave training-mode
    BatchNorm nothing to normalize in DeepLab's 1x1 image pooling), with the graph on, because whether a conv needs
    its input gradient is read from ``x.requires_grad``.
    """
    if name not in _flops_cache:
        import minseg
        from minseg import nn
        from minseg.models import create

        model = create(MODELS[name][0], CLASSES, **MODELS[name][1])
        total = {"forward": 0, "step": 0}

        def wrap(module, transposed):
            original = module.forward

            def forward(x):
                y = original(x)
                positions = BATCH * (x.shape[2] * x.shape[3] if transposed else y.shape[2] * y.shape[3])
                flops = 2 * module.weight.size * positions
                total["forward"] += flops
                total["step"] += flops * (3 if x.requires_grad else 2)
                return y
            module.forward = forward

        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                wrap(module, isinstance(module, nn.ConvTranspose2d))
        model(minseg.Tensor(np.zeros((2, CHANNELS, HEIGHT, WIDTH), np.float32)))
        _flops_cache[name] = total
    return _flops_cache[name][mode]


# --- PyTorch: the same definitions (benchmarks/twins.py), or smp's own models ---------------------------
def torch_case(name, mode):
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model_name, options = MODELS[name]
    if "encoder" in options:  # the segmentation_models family: smp's own model
        import segmentation_models_pytorch as smp
        model = getattr(smp, SMP_CLASSES[model_name])(options["encoder"], encoder_weights=None, classes=CLASSES)
    else:
        import twins
        model = twins.TWINS[model_name](CLASSES, **options)
    x = torch.randn(BATCH, CHANNELS, HEIGHT, WIDTH)
    target = torch.randint(0, CLASSES, (BATCH, HEIGHT, WIDTH))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def forward():
        with torch.no_grad():
            model(x)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()

    if mode == "forward":
        model.eval()
    return model, (forward if mode == "forward" else step)


# --- one case, in this process ---------------------------------------------------------
def run_case(framework, name, mode, runs):
    model, call = (minseg_case if framework == "minseg" else torch_case)(name, mode)
    n_parameters = int(sum(np.prod(p.shape) for p in model.parameters()))
    base = current_rss_mib()
    call()  # warm-up: first-touch allocations, BLAS threads, caches
    times, others_share = timed_runs(call, runs)
    return {"ms": statistics.median(times), "all_ms": times, "peak_mib": peak_rss_mib(), "base_mib": base,
            "parameters": n_parameters, "others": others_share}


def in_subprocess(framework, name, mode, runs):
    """The case in a fresh subprocess, so that its peak memory is its own (re-run while others took over 10%)."""
    return measured([sys.executable, os.path.abspath(__file__), "--case", framework, name, mode, "--runs", str(runs)])


def combined(results):
    """One result from several rounds: the median of their medians, the largest peak memory and CPU share."""
    if any("error" in result for result in results):
        return next(result for result in results if "error" in result)
    return {"ms": statistics.median(result["ms"] for result in results),
            "peak_mib": max(result["peak_mib"] for result in results),
            "base_mib": max(result["base_mib"] for result in results),
            "others": max(result["others"] for result in results), "parameters": results[0]["parameters"]}


def table(runs, cases, rounds=1):
    use_torch = have_torch()
    print(f"batch {BATCH}, {CHANNELS}x{HEIGHT}x{WIDTH}, {CLASSES} classes, float32, {runs} timed runs after 1 warm-up; "
          "memory = peak RSS (VmHWM) of a fresh process per case; others = CPU share other programs took "
          "meanwhile\n(a case is re-run, up to 3 times, while that is over 10%)"
          + (f"; {rounds} rounds alternating minseg and torch: ms = median of the rounds' medians, ratio range = "
             "the rounds' lowest and highest minseg/torch" if rounds > 1 else ""))
    width = max(16, max(len(name) for name in cases) + len(" forward") + 1)
    spread = use_torch and rounds > 1
    header = (f"{'case':<{width}}{'params':>11}{'minseg ms':>11}{'GFLOP/s':>9}{'peak MiB':>10}{'base MiB':>10}"
              + (f"{'torch ms':>10}{'GFLOP/s':>9}{'peak MiB':>10}{'ratio':>7}" if use_torch else "")
              + (f"{'ratio range':>13}" if spread else "") + f"{'others':>8}")
    print(header)
    print("-" * len(header))
    for name in cases:
        for mode in ("forward", "step"):
            gflop = conv_flops(name, mode) / 1e9
            our_rounds, their_rounds = paired_rounds(lambda: in_subprocess("minseg", name, mode, runs),
                                                     (lambda: in_subprocess("torch", name, mode, runs))
                                                     if use_torch else None, rounds)
            ours = combined(our_rounds)
            line = f"{name + ' ' + mode:<{width}}"
            if "error" in ours:
                print(line + f"  minseg failed: {ours['error']}")
                continue
            line += (f"{ours['parameters']:>11,}{ours['ms']:>11.0f}{gflop / ours['ms'] * 1e3:>9.1f}"
                     f"{ours['peak_mib']:>10.0f}{ours['base_mib']:>10.0f}")
            theirs = combined(their_rounds) if use_torch else {}
            if use_torch and "error" in theirs:
                line += f"  torch failed: {theirs['error']}"
            elif use_torch:
                if theirs["parameters"] != ours["parameters"]:
                    line += f"  (torch model has {theirs['parameters']:,} parameters!)"
                line += (f"{theirs['ms']:>10.0f}{gflop / theirs['ms'] * 1e3:>9.1f}{theirs['peak_mib']:>10.0f}"
                         f"{ours['ms'] / theirs['ms']:>7.2f}")
                if spread:
                    ratios = [o["ms"] / t["ms"] for o, t in zip(our_rounds, their_rounds)]
                    line += f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>13}"
            # Share of the machine's CPU that other programs used during the timed runs:
            # more than a few % means they competed with us and the row is suspect.
            line += f"{max(ours['others'], theirs.get('others', 0)):>8.0%}"
            print(line, flush=True)
    print("conv GFLOP per call: " + ", ".join(f"{n} fwd {conv_flops(n, 'forward') / 1e9:.2f} / step "
                                              f"{conv_flops(n, 'step') / 1e9:.2f}" for n in cases))


# --- profile: where the UNet training step spends its time ---------------------------------
def function_classes():
    import minseg
    found, stack = [], [minseg.Function]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


CATEGORIES = [("conv forward", ("Conv2dFunction.forward", "ConvTranspose2dFunction.forward")),
              ("conv backward", ("Conv2dFunction.backward", "ConvTranspose2dFunction.backward")),
              ("batchnorm", ("BatchNorm",)), ("relu", ("ReLU",)), ("pooling", ("Pool",)),
              ("cat", ("Cat",)), ("add", ("Add",)), ("loss", ("CrossEntropy",))]


def profile(name, runs):
    """cProfile the training step; time per Function (forward and backward), per op type, inside conv."""
    _, step = minseg_case(name, "step")
    step()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(runs):
        step()
    profiler.disable()
    wall = (time.perf_counter() - start) * 1000 / runs
    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, ncalls, own, cumulative, callers)

    def ms(select, column=3):
        return sum(v[column] for k, v in stats.items() if select(*k)) * 1000 / runs

    rows = []
    for cls in function_classes():
        for method in ("forward", "backward"):
            code = getattr(cls.__dict__.get(method), "__code__", None)
            if code is None:
                continue
            where = (code.co_filename, code.co_firstlineno)
            calls = sum(v[1] for k, v in stats.items() if k[:2] == where)
            if calls:
                rows.append((ms(lambda f, l, n: (f, l) == where), f"{cls.__name__}.{method}", calls // runs))
    print(f"{name} training step, {runs} profiled runs: {wall:.0f} ms per step under cProfile "
          f"(cProfile adds a few %)\n")
    print(f"{'ms/step':>8}{'share':>7}{'calls':>7}  Function")
    for row_ms, label, calls in sorted(rows, reverse=True):
        print(f"{row_ms:>8.1f}{row_ms / wall:>7.1%}{calls:>7}  {label}")

    print(f"\n{'ms/step':>8}{'share':>7}  op type")
    accounted = 0.0
    for category, keys in CATEGORIES:
        category_ms = sum(r[0] for r in rows if any(key in r[1] for key in keys))
        accounted += category_ms
        print(f"{category_ms:>8.1f}{category_ms / wall:>7.1%}  {category}")
    other_functions = sum(r[0] for r in rows) - accounted
    optimizer_ms = ms(lambda f, l, n: (n == "step" and f.endswith("optim.py")) or n == "sgd_step")
    zero_grad_ms = ms(lambda f, l, n: n == "zero_grad" and f.endswith("module.py"))
    rest = wall - accounted - other_functions - optimizer_ms - zero_grad_ms
    for label, value in (("other Functions", other_functions), ("optimizer step (SGD, momentum)", optimizer_ms),
                         ("zero_grad", zero_grad_ms), ("autograd bookkeeping, gradient sums, Python", rest)):
        print(f"{value:>8.1f}{value / wall:>7.1%}  {label}")

    conv_ms = sum(r[0] for r in rows if "Conv" in r[1])
    parts = [(label, ms(lambda f, l, n, fn=fn: f.endswith("im2col.py") and n == fn))
             for label, fn in (("im2col (window copies)", "im2col"), ("col2im (window sums)", "col2im"),
                               ("zero padding", "_pad"))]
    print(f"\ninside the conv Functions ({conv_ms:.0f} ms/step):")
    for label, value in parts:
        print(f"{value:>8.1f}{value / wall:>7.1%}  {label}")
    rest = conv_ms - parts[0][1] - parts[1][1]  # _pad runs inside im2col/col2im
    print(f"{rest:>8.1f}{rest / wall:>7.1%}  matrix products, bias, layout copies (the rest)")
    print("\nown time, top 15 functions:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each case this many times, alternating minseg and torch (_common.paired_rounds)")
    parser.add_argument("--profile", nargs="?", const="unet", choices=list(MODELS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="CASE",
                        help=f"the cases to run (default: all of {', '.join(MODELS)})")
    parser.add_argument("--case", nargs=3, metavar=("FRAMEWORK", "MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case, args.runs)))
    elif args.profile:
        profile(args.profile, args.runs)
    else:
        table(args.runs, args.models, args.rounds)


if __name__ == "__main__":
    main()
