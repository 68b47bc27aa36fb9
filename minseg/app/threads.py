"""How many BLAS threads a command uses: the cores not busy with other work (``--threads`` overrides)."""
import os
import time

from threadpoolctl import threadpool_limits

__all__ = ["default_threads", "limit_threads"]


def _busy_cores(seconds=0.2):
    """How many cores other processes keep busy now: /proc/stat's busy time over ``seconds`` (Linux),
    else the 1-minute load average (which lags: it still counts a run that just ended)."""
    def busy_and_total():
        with open("/proc/stat") as file:
            values = [int(v) for v in file.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)
    try:
        busy_before, total_before = busy_and_total()
        time.sleep(seconds)
        busy_after, total_after = busy_and_total()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    return cores * (busy_after - busy_before) / max(total_after - total_before, 1)


def default_threads():
    """The cores this process may use, less the ones other processes keep busy right now, at least 1.

    An OpenBLAS thread that shares its core with another busy process makes every GEMM wait for it
    (see benchmarks/threads.py), so on a busy machine fewer threads are faster, not slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, round(cores - _busy_cores() + 0.25)))


def limit_threads(threads):
    """A context limiting BLAS (and OpenMP) pools to ``threads`` (threadpoolctl)."""
    return threadpool_limits(limits=threads)
