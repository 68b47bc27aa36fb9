"""Images per second of a UNet training step: one process on 2 threads, 2 MPI ranks on 1 thread each, PyTorch.

    python benchmarks/data_parallel.py                      # UNet base 16 and 32, 96x128, global batch 8
    python benchmarks/data_parallel.py --bases 4 --size 32x32 --runs 2 --warmup 1 --rounds 1   # a rehearsal

Three cases per base, each in a fresh subprocess (``_common.measured``), alternated round by round so that all
see the machine in the same state:

* minseg, one process, BLAS on 2 threads: ``Learner.train_step`` on the whole batch;
* minseg, ``mpiexec -n 2``, 1 BLAS thread per rank: ``Learner(comm=MPICommunicator())`` with SyncBatchNorm,
  each rank ``train_step``-ing its half of the batch (the loss weights, the gradient all-reduce, all of it);
* PyTorch on 2 threads (``_common.optional_torch``), the same UNet (``twins.PaperUNet``), when installed.

Each case prints its median step time, images per second and, for the ranks, the share of a step spent in the
gradient all-reduce (``allreduce_gradients``) and in every collective (the gradients, SyncBatchNorm's statistics,
the loss weights; this one includes waiting for the other rank). The summary gives the ratios the course page
(docs/course_7_many_processes.md) quotes. Needs ``pip install -e ".[mpi]"``; ``--case`` is how the script runs
its own cases.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine_busy_seconds, measured, optional_torch
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve()
NUM_CLASSES = 32


def _size(text):
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", type=int, nargs="+", default=[16, 32], help="UNet widths (default: 16 32)")
    parser.add_argument("--size", type=_size, default=(96, 128), help="HxW (default: 96x128)")
    parser.add_argument("--batch", type=int, default=8, help="global batch (default: 8)")
    parser.add_argument("--runs", type=int, default=10, help="timed steps per case (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three cases (default: 3)")
    beside_python = Path(sys.executable).parent / "mpiexec"  # where pip's MPICH puts it
    parser.add_argument("--mpiexec", default=str(beside_python) if beside_python.exists() else "mpiexec",
                        help="the MPI launcher (default: the one beside this Python, else mpiexec)")
    parser.add_argument("--case", choices=["single", "ranks", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The cases, each run in its own process
# ---------------------------------------------------------------------------------------------
class _Batch:
    """One fixed batch of random uint8 images and labels, as a dataset the DataLoader shares out."""

    def __init__(self, n, size):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, NUM_CLASSES, (n, *size)).astype(np.int64)
        self.num_classes = NUM_CLASSES

    def __len__(self):
        return len(self.images)


def _timed(step, args, comm, counters=None):
    """(median seconds per step, share of the machine's CPU that programs other than the ranks took, and the
    timed steps' totals of ``counters``, a dict of one-element lists that the step adds seconds to)."""
    counters = {} if counters is None else counters
    for _ in range(args.warmup):
        step()
    comm.barrier()
    for counter in counters.values():
        counter[0] = 0.0
    busy, own, wall = machine_busy_seconds(), sum(os.times()[:2]), time.perf_counter()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    totals = {name: counter[0] for name, counter in counters.items()}
    ranks_cpu = comm.allreduce_sum(np.array([sum(os.times()[:2]) - own]))[0]
    others = max(0.0, machine_busy_seconds() - busy - ranks_cpu) / (os.cpu_count() * (time.perf_counter() - wall))
    return statistics.median(times), others, totals


def _timing(function, counter):
    """``function``, adding the seconds of each call to ``counter[0]``."""
    def timed(*args):
        start = time.perf_counter()
        result = function(*args)
        counter[0] += time.perf_counter() - start
        return result
    return timed


def minseg_case(args, ranks):
    import minseg
    import minseg.functional as F
    import minseg.train.learner as learner_module
    from minseg import nn
    from minseg.data import DataLoader
    from minseg.distributed import MPICommunicator, SingleProcess
    from minseg.models import create
    from minseg.optim import AdamW
    from minseg.train import Learner

    comm = MPICommunicator() if ranks else SingleProcess()
    counters = {"gradients": [0.0], "collectives": [0.0]}
    comm.allreduce_sum = _timing(comm.allreduce_sum, counters["collectives"])
    learner_module.allreduce_gradients = _timing(learner_module.allreduce_gradients, counters["gradients"])
    minseg.manual_seed(0)
    model = create("unet", NUM_CLASSES, base=args.base)
    if ranks:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, comm)
    loader = DataLoader(_Batch(args.batch, args.size), batch_size=args.batch, num_replicas=comm.size, rank=comm.rank)
    learner = Learner(model, loader, loader, F.cross_entropy, AdamW(model.parameters(), lr=1e-3), progress=False,
                      comm=comm)
    images, targets = next(iter(loader))
    with threadpool_limits(limits=1 if ranks else 2):
        seconds, others, totals = _timed(lambda: learner.train_step(images, targets), args, comm, counters)
    result = {"seconds": seconds, "images_per_second": args.batch / seconds, "others": others}
    if ranks:  # shares of the mean step
        result["gradient_allreduce_share"] = totals["gradients"] / args.runs / seconds
        result["collectives_share"] = totals["collectives"] / args.runs / seconds
    if comm.rank == 0:
        print(json.dumps(result))


def torch_case(args):
    torch = optional_torch()
    from twins import PaperUNet

    from minseg.distributed import SingleProcess
    torch.manual_seed(0)
    model = PaperUNet(NUM_CLASSES, base=args.base)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _Batch(args.batch, args.size)
    images = torch.from_numpy(batch.images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    targets = torch.from_numpy(batch.labels)

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds, others, _ = _timed(step, args, SingleProcess())
    print(json.dumps({"seconds": seconds, "images_per_second": args.batch / seconds, "others": others}))


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
def _command(args, case, base):
    common = ["--case", case, "--base", str(base), "--size", f"{args.size[0]}x{args.size[1]}",
              "--batch", str(args.batch), "--runs", str(args.runs), "--warmup", str(args.warmup)]
    command = [sys.executable, str(HERE), *common]
    return [args.mpiexec, "-n", "2", *command] if case == "ranks" else command


def _median(results, key):
    values = [result[key] for result in results if key in result]
    return statistics.median(values) if values else float("nan")


def main(args):
    torch = optional_torch()
    cases = ["single", "ranks"] + (["torch"] if torch is not None else [])
    names = {"single": "minseg, 1 process x 2 threads", "ranks": "minseg, mpiexec -n 2 x 1 thread",
             "torch": "PyTorch, 2 threads"}
    print(f"UNet training step, {args.size[0]}x{args.size[1]}, global batch {args.batch}, {NUM_CLASSES} classes; "
          f"median of {args.runs} steps after {args.warmup}, {args.rounds} rounds")
    for base in args.bases:
        results = {case: [] for case in cases}
        for _ in range(args.rounds):
            for case in cases:
                results[case].append(measured(_command(args, case, base)))
        errors = [r["error"] for rs in results.values() for r in rs if "error" in r]
        if errors:
            print(f"base {base}: a case failed: {errors[0]}")
            continue
        rates = {case: _median(results[case], "images_per_second") for case in cases}
        print(f"\nbase {base}")
        for case in cases:
            extra = ""
            if case == "ranks":
                extra = (f"; gradient all-reduce {100 * _median(results[case], 'gradient_allreduce_share'):.1f}% "
                         f"of a step, every collective (with waiting) "
                         f"{100 * _median(results[case], 'collectives_share'):.1f}%")
            print(f"  {names[case]:34s} {rates[case]:7.2f} images/s{extra}")
        print(f"  mpiexec -n 2 / one process: {rates['ranks'] / rates['single']:.2f}x")
        if "torch" in rates:
            print(f"  mpiexec -n 2 / PyTorch: {rates['ranks'] / rates['torch']:.2f}x; "
                  f"one process / PyTorch: {rates['single'] / rates['torch']:.2f}x")


if __name__ == "__main__":
    arguments = parse()
    if arguments.case == "torch":
        torch_case(arguments)
    elif arguments.case is not None:
        minseg_case(arguments, ranks=arguments.case == "ranks")
    else:
        main(arguments)
