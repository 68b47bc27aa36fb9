"""The history models (FCN, SegNet, ENet, PointRend): minseg against PyTorch twins of the same definitions.

    python benchmarks/history.py              # training step, minseg vs torch
    python benchmarks/history.py --rounds 3   # each step 3 times, minseg and torch in turn
    python benchmarks/history.py --check      # same weights in, same scores out?
    python benchmarks/history.py --inference  # ENet vs UNet at 360x480

The method is ``benchmarks/models.py``'s: batch 8 × 3 × 96 × 128, 32 classes, one training step = forward, loss,
zero_grad, backward, SGD (lr 0.01, momentum 0.9) step; the median of ``--runs`` timed calls after one warm-up
call; each case in a fresh subprocess; PyTorch on 2 threads; the ratio is minseg / torch measured in the same run.
"others" is the share of the machine's CPU other programs took during the timed calls (a case is re-run, up to
3 times, while it is over 10%). The twins live in ``benchmarks/twins.py``; ``--check`` copies a minseg
model's state dict into its twin and compares the eval-mode outputs.
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np
from _common import measured, paired_rounds, timed_runs

BATCH, CHANNELS, HEIGHT, WIDTH, CLASSES = 8, 3, 96, 128, 32
NAMES = ["fcn32s", "fcn16s", "fcn8s", "segnet_basic", "segnet", "enet", "pointrend"]
LR, MOMENTUM = 0.01, 0.9


def loss_of(model, cross_entropy):
    """PointRend trains with its own loss (coarse + points); every other model with plain cross-entropy."""
    return model.loss if hasattr(model, "loss") and callable(model.loss) else cross_entropy


# --- one case -----------------------------------------------------------------------------------------
def minseg_case(name, mode, shape):
    import minseg
    import minseg.functional as F
    from minseg.models import create
    from minseg.optim import SGD

    minseg.manual_seed(0)
    model = create(name, CLASSES, **({"base": 32} if name == "unet" else {}))
    rng = np.random.default_rng(0)
    x = minseg.Tensor(rng.standard_normal(shape).astype(np.float32))
    target = minseg.Tensor(rng.integers(0, CLASSES, size=(shape[0],) + shape[2:]))
    optimizer = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = loss_of(model, F.cross_entropy)

    def forward():
        with minseg.no_grad():
            model(x)

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), target).backward()
        optimizer.step()

    model.train(mode == "step")
    return model, (step if mode == "step" else forward)


def torch_case(name, mode, shape):
    import torch
    import twins
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = twins.TWINS[name](CLASSES, **({"base": 32} if name == "unet" else {}))
    x = torch.randn(*shape)
    target = torch.randint(0, CLASSES, (shape[0],) + shape[2:])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = loss_of(model, torch.nn.functional.cross_entropy)

    def forward():
        with torch.no_grad():
            model(x)

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), target).backward()
        optimizer.step()

    model.train(mode == "step")
    return model, (step if mode == "step" else forward)


def run_case(framework, name, mode, runs, shape):
    model, call = (minseg_case if framework == "minseg" else torch_case)(name, mode, shape)
    parameters = int(sum(np.prod(p.shape) for p in model.parameters()))
    call()  # warm-up: first-touch allocations, BLAS threads, caches
    times, share = timed_runs(call, runs)
    return {"ms": statistics.median(times), "all_ms": times, "parameters": parameters, "others": share}


def in_subprocess(framework, name, mode, runs, shape):
    """The case in a fresh subprocess, re-run (up to 3 times) while other programs took over 10%."""
    return measured([sys.executable, os.path.abspath(__file__), "--case", framework, name, mode, "--runs", str(runs),
                     "--shape", ",".join(map(str, shape))])


# --- the tables ---------------------------------------------------------------------------------------------
def speed_table(runs, names, rounds=1):
    """minseg's and the twin's step, case by case; with ``rounds`` > 1, minseg then torch that many times in turn.

    (``_common.paired_rounds``: the machine's speed drifts within minutes, so alternating lets both frameworks see
    the same drift; ms is the median of the rounds' medians and the range the rounds' lowest and highest ratio.)
    """
    shape = (BATCH, CHANNELS, HEIGHT, WIDTH)
    print(f"training step, batch {BATCH}x{CHANNELS}x{HEIGHT}x{WIDTH}, {CLASSES} classes, float32, SGD momentum; "
          f"median of {runs} runs after 1 warm-up, each case in a fresh process; torch on 2 threads; "
          f"{rounds} round(s) alternating minseg and torch")
    header = f"{'model':<14}{'params':>12}{'minseg ms':>11}{'torch ms':>10}{'ratio':>7}{'ratio range':>13}{'others':>8}"
    print(header + "\n" + "-" * len(header))
    for name in names:
        ours, theirs = paired_rounds(lambda: in_subprocess("minseg", name, "step", runs, shape),
                                     lambda: in_subprocess("torch", name, "step", runs, shape), rounds)
        failed = [result["error"] for result in ours + theirs if "error" in result]
        if failed:
            print(f"{name:<14}  failed: {failed[0]}")
            continue
        our_ms, their_ms = (statistics.median(result["ms"] for result in side) for side in (ours, theirs))
        ratios = [mine["ms"] / twin["ms"] for mine, twin in zip(ours, theirs)]
        others = max(result["others"] for result in ours + theirs)
        parameters, twin_parameters = ours[0]["parameters"], theirs[0]["parameters"]
        note = "" if parameters == twin_parameters else f"  (torch: {twin_parameters:,} params!)"
        print(f"{name:<14}{parameters:>12,}{our_ms:>11.0f}{their_ms:>10.0f}{our_ms / their_ms:>7.2f}"
              f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>13}{others:>8.0%}{note}", flush=True)


def inference_table(runs):
    """ENet's point is real time: eval forward of one 360x480 image (UNet, base 32, needs a multiple of 16: 368x480)."""
    print(f"inference (eval forward, no graph), batch 1, {CLASSES} classes, median of {runs} runs after 1 warm-up")
    header = f"{'model':<10}{'input':>10}{'params':>12}{'minseg ms':>11}{'torch ms':>10}{'ratio':>7}"
    print(header + "\n" + "-" * len(header))
    for name, size in (("enet", (360, 480)), ("unet", (368, 480))):
        shape = (1, CHANNELS) + size
        ours = in_subprocess("minseg", name, "forward", runs, shape)
        theirs = in_subprocess("torch", name, "forward", runs, shape)
        if "error" in ours or "error" in theirs:
            print(f"{name:<10}  failed: {ours.get('error') or theirs.get('error')}")
            continue
        print(f"{name:<10}{size[0]:>6}x{size[1]:<3}{ours['parameters']:>12,}{ours['ms']:>11.0f}{theirs['ms']:>10.0f}"
              f"{ours['ms'] / theirs['ms']:>7.2f}", flush=True)


def check_outputs(names):
    """Copy each minseg model's weights (with random BatchNorm statistics) into its twin; compare eval outputs."""
    import torch
    import twins

    import minseg
    from minseg.models import create
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, CHANNELS, 64, 96)).astype(np.float32)
    print(f"{'model':<14}{'worst rel. diff.':>18}")
    for name in names:
        minseg.manual_seed(0)
        model = create(name, CLASSES).eval()
        for key, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.data.dtype.kind == "f":  # nothing at zero (FCN's score layers start there), BN stats random
                values = rng.uniform(0.5, 1.5, tensor.shape) if key.endswith("running_var") else \
                    tensor.data + rng.uniform(-0.1, 0.1, tensor.shape)
                tensor.data = values.astype(np.float32)
        twin = twins.load_minseg_weights(twins.TWINS[name](CLASSES), model).eval()
        with minseg.no_grad():
            ours = model(minseg.Tensor(x)).numpy()
        with torch.no_grad():
            theirs = twin(torch.from_numpy(x)).numpy()
        print(f"{name:<14}{np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)):>18.2e}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="each step this many times, minseg and torch in turn")
    parser.add_argument("--models", default=",".join(NAMES), help="comma-separated subset of " + ",".join(NAMES))
    parser.add_argument("--check", action="store_true", help="compare outputs with the twins (same weights)")
    parser.add_argument("--inference", action="store_true", help="ENet vs UNet inference at 360x480")
    parser.add_argument("--case", nargs=3, metavar=("FRAMEWORK", "MODEL", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--shape", default=f"{BATCH},{CHANNELS},{HEIGHT},{WIDTH}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [name for name in names if name not in NAMES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if args.case:
        shape = tuple(int(v) for v in args.shape.split(","))
        print(json.dumps(run_case(*args.case, args.runs, shape)))
    elif args.check:
        check_outputs(names)
    elif args.inference:
        inference_table(args.runs)
    else:
        speed_table(args.runs, names, args.rounds)


if __name__ == "__main__":
    main()
