"""Many processes, one model: the communicator that data-parallel training passes around.

Data parallelism splits each batch between K processes ("ranks"), each holding a full copy of the model.
The loss of a batch is a mean over its pixels, so its gradient is a sum over them: each rank computes the
gradient of its share, one all-reduce (every rank ends with the sum over all ranks) adds the shares, and
every rank takes the same optimizer step from the same weights. ``docs/course_7_many_processes.md``
tells the story; ``Learner(comm=...)`` runs it.

A communicator is one small object (``Communicator``): its ``rank`` and ``size``, an in-place
``allreduce_sum`` and ``broadcast`` of an array, ``barrier`` and ``abort``. Three of them:

- ``SingleProcess``: rank 0 of 1; every collective is the identity. What a Learner uses by default.
- ``MPICommunicator``: mpi4py's ``COMM_WORLD`` (``pip install "minseg[mpi]"``, run under ``mpiexec``).
- ``ThreadGroup(K)``: K communicators for K threads of one process, the stand-in that lets a test (or
  a docs page) split a batch between "ranks" without MPI.

``broadcast_module`` (rank 0's weights and buffers to every rank) and ``allreduce_gradients`` (every
parameter's gradient summed across ranks, through one flat buffer per dtype, not one message per
parameter) are the two steps a data-parallel training loop adds.
"""
import os
import threading
import time

import numpy as np

from . import backend

__all__ = ["Communicator", "SingleProcess", "MPICommunicator", "ThreadGroup", "launched_by_mpiexec",
           "broadcast_module", "allreduce_gradients"]


# ---------------------------------------------------------------------------
# The protocol and its one-process version
# ---------------------------------------------------------------------------
class Communicator:
    """What data-parallel training needs from K processes: ``rank`` (0 … K−1), ``size`` (K) and

    - ``allreduce_sum(array)``: every rank's ``array`` replaced, in place, by the sum over all ranks;
    - ``broadcast(array, root=0)``: every rank's ``array`` replaced, in place, by ``root``'s;
    - ``barrier()``: returns once every rank has called it;
    - ``agree(timeout)``: True when every rank calls it within ``timeout`` seconds (how ranks that
      fail together tell that apart from one rank failing while the others wait), else False;
    - ``abort(code)``: end every rank now, with exit status ``code``.

    Every rank calls the collectives in the same order, with arrays of the same shape and dtype.
    """

    rank, size = 0, 1

    def allreduce_sum(self, array):
        return array

    def broadcast(self, array, root=0):
        return array

    def barrier(self):
        pass

    def agree(self, timeout):
        return True

    def abort(self, code):
        os._exit(code)


class SingleProcess(Communicator):
    """Rank 0 of 1: every collective leaves its array as it is."""

    def __repr__(self):
        return "SingleProcess()"


# ---------------------------------------------------------------------------
# MPI
# ---------------------------------------------------------------------------
_MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def launched_by_mpiexec():
    """True when this process is one of several started by ``mpiexec`` (MPICH, Open MPI, MVAPICH).

    Read from the launcher's environment, so a program run alone never imports mpi4py."""
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _MPI_SIZE_VARIABLES)


class MPICommunicator(Communicator):
    """mpi4py's ``COMM_WORLD`` (or ``comm``) as a Communicator; NumPy arrays go through the buffer interface.

    ``local_size`` is the number of ranks on this machine (what splits its cores between them).
    ``agree`` runs on a duplicate of the communicator, so it never matches a collective of the training.
    """

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as error:
            raise ImportError('MPICommunicator: needs mpi4py and an MPI library; pip install "minseg[mpi]" '
                              "(mpi4py and MPICH)") from error
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_size = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        self._agreement = self.comm.Dup()

    def allreduce_sum(self, array):
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def broadcast(self, array, root=0):
        self.comm.Bcast(array, root=root)
        return array

    def barrier(self):
        self.comm.Barrier()

    def agree(self, timeout):
        request = self._agreement.Ibarrier()
        deadline = time.monotonic() + timeout
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def abort(self, code):
        self.comm.Abort(code)

    def __repr__(self):
        return f"MPICommunicator(rank={self.rank}, size={self.size})"


# ---------------------------------------------------------------------------
# The stand-in: K ranks as K threads of one process
# ---------------------------------------------------------------------------
class ThreadGroup:
    """K communicators whose collectives meet in one process: ``ThreadGroup(2).run(fn)`` calls ``fn(comm)``
    in two threads, one per rank, and returns their results in rank order.

    ``allreduce_sum`` adds the ranks' arrays in rank order on every rank, so every rank gets the same bits,
    as MPI guarantees. An exception in one thread breaks the others' waits and is raised by ``run``.
    """

    def __init__(self, size, timeout=60.0):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ThreadGroup: size must be a positive integer, got {size!r}")
        self.size = size
        self._barrier = threading.Barrier(size, timeout=timeout)
        self._slots = [None] * size
        self.communicators = [_ThreadRank(self, rank) for rank in range(size)]

    def _exchange(self, rank, array):
        """Every rank's ``array`` (a copy), in rank order, once all ranks have handed theirs in."""
        self._slots[rank] = array.copy()
        self._barrier.wait()
        arrays = list(self._slots)
        self._barrier.wait()  # nobody overwrites a slot before every rank has read them all
        return arrays

    def run(self, fn):
        results, errors = [None] * self.size, []

        def target(comm):
            try:
                results[comm.rank] = fn(comm)
            except BaseException as error:  # noqa: B036 -- handed to the caller below
                errors.append(error)
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(comm,)) for comm in self.communicators]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
            raise first
        return results


class _ThreadRank(Communicator):
    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size

    def allreduce_sum(self, array):
        arrays = self.group._exchange(self.rank, array)
        total = arrays[0].copy()
        for other in arrays[1:]:
            total += other
        array[...] = total
        return array

    def broadcast(self, array, root=0):
        array[...] = self.group._exchange(self.rank, array)[root]
        return array

    def barrier(self):
        self.group._barrier.wait()

    def agree(self, timeout):
        return True

    def abort(self, code):
        self.group._barrier.abort()
        raise SystemExit(code)

    def __repr__(self):
        return f"ThreadGroup rank {self.rank} of {self.size}"


# ---------------------------------------------------------------------------
# What data-parallel training adds: one broadcast at the start, one all-reduce per step
# ---------------------------------------------------------------------------
def _flat(arrays):
    """One contiguous copy of ``arrays``, flattened and concatenated (all of one dtype and device)."""
    xp = backend.get_array_module(arrays[0])
    return xp.concatenate([array.reshape(-1) for array in arrays])


def _unflatten_into(flat, arrays):
    """Write consecutive pieces of ``flat`` back into ``arrays``, in place."""
    start = 0
    for array in arrays:
        array[...] = flat[start:start + array.size].reshape(array.shape)
        start += array.size


def _by_dtype(arrays):
    groups = {}
    for array in arrays:
        groups.setdefault(np.dtype(array.dtype), []).append(array)
    return groups.values()


def broadcast_module(module, comm, root=0, buffers_only=False):
    """Overwrite every rank's parameters and buffers (or buffers alone) with rank ``root``'s: one message per
    dtype. After it the ranks hold the same weights, whatever each one's initialization drew."""
    if comm.size == 1:
        return module
    tensors = list(module.named_buffers()) if buffers_only else (list(module.named_parameters())
                                                                 + list(module.named_buffers()))
    arrays = [tensor.data for _, tensor in tensors if tensor is not None]
    for group in _by_dtype(arrays):
        _unflatten_into(comm.broadcast(_flat(group), root), group)
    return module


def allreduce_gradients(parameters, comm):
    """Replace every parameter's ``grad`` by its sum over the ranks, through one flat buffer per dtype.

    A parameter without a gradient on this rank (a branch its batch never used) counts as zeros, so every
    rank sends buffers of the same size. One message of all gradients, rather than one per parameter,
    pays the network's latency once per step."""
    parameters = [p for p in parameters if p.requires_grad]
    if comm.size == 1 or not parameters:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = backend.get_array_module(parameter.data).zeros_like(parameter.data)
    for group in _by_dtype([p.grad for p in parameters]):
        _unflatten_into(comm.allreduce_sum(_flat(group)), group)
