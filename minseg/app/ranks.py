"""``mpiexec -n K minseg train``: which communicator, how many threads per rank, and how a failure ends the job.

``communicator()`` is ``SingleProcess`` unless ``mpiexec`` started this process as one of several; only then is
mpi4py imported (``pip install "minseg[mpi]"``), so nothing changes for a run without MPI.

A failure never leaves ranks waiting. Each rank that fails (a user's mistake, divergence, an internal error,
Ctrl-C, which ``mpiexec`` hands to every rank) calls ``stop``: when every rank gets there within a few
seconds, they failed together (every rank reads the same options and files, and divergence is decided from
all ranks' sums), so rank 0 prints the one line and every rank exits with the status. Otherwise the others
are waiting in a collective for this one: it prints its line, naming its rank, and ``MPI_Abort`` ends the
whole job with the status (MPICH adds a line of its own). A rank that dies (killed, out of memory) takes the
job down through ``mpiexec``, which ends the others when one exits without finishing MPI.
"""
import sys

from ..distributed import MPICommunicator, SingleProcess, launched_by_mpiexec
from .options import UsageError
from .threads import default_threads

__all__ = ["communicator", "threads_per_rank", "stop", "AGREE_SECONDS"]

AGREE_SECONDS = 3.0  # how long a failing rank waits for the others to fail too before ending the job


def communicator():
    """``MPICommunicator`` under ``mpiexec -n K`` with K > 1, else ``SingleProcess``."""
    if not launched_by_mpiexec():
        return SingleProcess()
    try:
        return MPICommunicator()
    except ImportError as error:
        raise UsageError(f"mpiexec started several processes, but {error}; without it each would train alone"
                         ) from error


def threads_per_rank(comm, threads=None):
    """``threads`` (``--threads``, per rank), else this machine's free cores split between its ranks, at least 1.

    The ranks measure together, right after a barrier, while all of them sleep in the measurement, so none
    counts the others' start-up as busy cores."""
    if threads is not None:
        return threads
    if comm.size == 1:
        return default_threads()
    comm.barrier()
    return max(1, default_threads() // getattr(comm, "local_size", 1))


def stop(comm, message, status):
    """End this rank after a failure: ``message`` once (None: already printed), exit ``status`` for every rank.

    Returns ``status`` when the ranks failed together (so the caller exits normally); otherwise aborts the job."""
    if comm.size == 1 or comm.agree(AGREE_SECONDS):
        if message and comm.rank == 0:
            print(message, file=sys.stderr, flush=True)
        return status
    if message:
        print(f"{message} [rank {comm.rank} of {comm.size}; ending the job]", file=sys.stderr, flush=True)
    comm.abort(status)
    return status
