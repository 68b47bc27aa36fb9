"""What every CPU benchmark measures the same way: median times, the machine's other load, rounds, PyTorch.

A script run as ``python benchmarks/NAME.py`` has ``benchmarks/`` first on ``sys.path``, so ``import _common``
finds this file; minseg itself comes from the installed package (``pip install -e .``).

* ``median_ms``: the median of back-to-back calls after untimed warm-up calls.
* ``timed_runs``: the same calls' times, and the share of the machine's CPU that other programs took meanwhile
  (``machine_busy_seconds``, from ``/proc/stat``): this machine is shared, and a disturbed measurement shows there,
  unlike in a load average.
* ``measured``: a case run in a fresh subprocess that prints its result as JSON, re-run while others were busy.
* ``paired_rounds``: minseg's case and PyTorch's, alternated round by round.
* ``optional_torch`` and ``have_torch``: PyTorch is a comparison point only; without it the torch columns go.
* ``SMP_CLASSES``: segmentation_models_pytorch's class for each of minseg's encoder models.
"""
import json
import os
import statistics
import subprocess
import time


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def median_ms(function, runs, warmup):
    """Median milliseconds of ``runs`` back-to-back calls, after ``warmup`` untimed ones.

    Back to back on purpose: the warm-up calls also let the other library's worker threads, which spin for a while
    after each call, go idle; pausing between calls would let freed memory go back to the system, so the next call
    would time first-touch page faults rather than the operation.
    """
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def machine_busy_seconds():
    """CPU seconds all processes have used so far (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def timed_runs(call, runs):
    """([milliseconds of each of ``runs`` calls], share of the machine's CPU other programs took meanwhile)."""
    times = []
    busy_before, own_before, wall_before = machine_busy_seconds(), sum(os.times()[:2]), time.perf_counter()
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    others = machine_busy_seconds() - busy_before - (sum(os.times()[:2]) - own_before)
    return times, max(0.0, others) / (os.cpu_count() * (time.perf_counter() - wall_before))


# ---------------------------------------------------------------------------------------------
# Cases in subprocesses, and rounds
# ---------------------------------------------------------------------------------------------
def measured(command, attempts=3, disturbed=0.10):
    """The result a case's ``command`` prints as JSON on its last line, in a fresh subprocess.

    Re-run (up to ``attempts`` times) while other programs took more than ``disturbed`` of the machine's CPU
    (``result["others"]``). A failed case gives ``{"error": its last line of stderr}``.
    """
    for _ in range(attempts):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return {"error": lines[-1] if lines else "failed"}
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["others"] <= disturbed:
            break
    return result


def paired_rounds(measure_minseg, measure_torch, rounds):
    """(minseg's results, PyTorch's) for ``rounds`` rounds, each minseg's case then PyTorch's, back to back.

    This machine's speed drifts by tens of percent over minutes; alternating the two frameworks round by round
    lets both see it in the same state, and the spread of the per-round ratios shows how far one round can be
    trusted. ``measure_torch`` None measures minseg only. A failed case (a result with "error") ends the rounds.
    """
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(measure_minseg())
        if "error" in ours[-1]:
            break
        if measure_torch is not None:
            theirs.append(measure_torch())
            if "error" in theirs[-1]:
                break
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# PyTorch and segmentation_models_pytorch, when installed
# ---------------------------------------------------------------------------------------------
def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def optional_torch():
    """PyTorch on 2 threads (NumPy's BLAS here uses both cores too), or None with a note when it is not installed."""
    try:
        import torch
    except ImportError:
        print("(PyTorch is not installed: minseg's times only)")
        return None
    torch.set_num_threads(2)
    return torch


# ``create(name, ..., encoder=...)``'s name -> segmentation_models_pytorch's class of the same model
SMP_CLASSES = {"unet": "Unet", "linknet": "Linknet", "fpn": "FPN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3",
               "deeplabv3plus": "DeepLabV3Plus"}
