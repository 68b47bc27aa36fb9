"""Synchronized batch norm: batch norm over a batch split between ranks, with the statistics of the whole batch.

Data-parallel training gives each rank a share of the batch. Plain batch norm would normalize each share by
its own mean and variance, which is a different function from batch norm over the whole batch (and noisier
when a share is small). Here each rank all-reduces its per-channel sums, so every rank normalizes by the
whole batch's statistics, and the backward all-reduces the two per-channel sums that the gradient of those
statistics needs. ``SyncBatchNormFunction`` derives it; it reuses batch norm's standardization helpers.
"""
import numpy as np

from ..autograd import Function, as_tensor
from ..backend import get_array_module
from .normalization import (
    _affine_tensors,
    _by_channel,
    _check_channel_vectors,
    _dot_over,
    _standardize_backward,
    _sum_over,
    _update_running,
    batch_norm,
)

__all__ = ["sync_batch_norm"]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _global_sums(comm, *per_channel):
    """Each (1, C, 1) array (and any Python numbers) summed over the ranks, in float64: one message."""
    xp = get_array_module(per_channel[0])
    parts = [xp.asarray(value, dtype=np.float64).reshape(-1) for value in per_channel]
    flat = comm.allreduce_sum(xp.concatenate(parts))
    sums, start = [], 0
    for part in parts:
        sums.append(flat[start:start + part.size])
        start += part.size
    return sums


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class SyncBatchNormFunction(Function):
    """y = γ·x̂ + β per channel, x̂ = (x − μ)/σ, σ = √(σ² + ε), μ and σ² over the values of every rank.

    Rank k holds n_k of the channel's N = Σ_k n_k values. The forward all-reduces Σ x (and n_k), giving
    μ = Σ_all x / N, then Σ (x − μ)², giving the biased σ² (the sums travel in float64). Two messages instead
    of one of Σx and Σx²: the centred sum is the one batch norm computes, where Σx² − N·μ² would lose digits
    to cancellation whenever |μ| is large beside σ.

    Backward. The loss is L = Σ_k L_k, rank k's part. μ and σ² depend on every rank's x, so the derivation of
    ``BatchNormFunction`` holds with its means taken over all N values: with g = γ·∂L/∂y,

        ∂L/∂x = (1/σ) · (g − (1/N)·Σ_all g − x̂ · (1/N)·Σ_all g·x̂)

    where Σ_all runs over the values of every rank: the terms through μ and σ² collect the upstream gradient
    of every rank, which is what the backward's all-reduce of the per-channel Σ g and Σ g·(x − μ) brings in.
    γ and β are not shared through the statistics: grad_γ = Σ grad_y·x̂ and grad_β = Σ grad_y over this
    rank's values only; the gradient all-reduce of data-parallel training adds them up with every other
    parameter's gradient (returning the global sums here would count them K times).
    """

    def __init__(self, comm, eps):
        self.comm, self.eps = comm, eps

    def forward(self, x, weight, bias):
        z = _by_channel(x)
        local_count = z.shape[0] * z.shape[2]
        total, count = _global_sums(self.comm, _sum_over(z, (0, 2)), local_count)
        self.count = count[0]
        dtype = x.dtype.type
        self.mean = (total / self.count).astype(x.dtype).reshape(1, -1, 1)
        centered = z - self.mean
        (squares,) = _global_sums(self.comm, _dot_over(centered, centered, (0, 2)))
        self.var = (squares / self.count).astype(x.dtype).reshape(1, -1, 1)
        self.inv_std = 1 / get_array_module(x).sqrt(self.var + dtype(self.eps))
        self.x, self.weight = x, weight.reshape(1, -1, 1)
        y = centered  # the centering buffer becomes y, in place
        y *= self.weight * self.inv_std
        y += bias.reshape(1, -1, 1)
        return y.reshape(x.shape)

    def backward(self, grad_y):
        needs, grad_z = self.needs_input_grad, _by_channel(grad_y)
        centered = _by_channel(self.x) - self.mean
        sum_grad = _sum_over(grad_z, (0, 2))
        sum_grad_centered = _dot_over(grad_z, centered, (0, 2))
        # every rank takes part, whether or not it needs grad_x: the others wait for its sums
        total_grad, total_grad_centered = _global_sums(self.comm, sum_grad, sum_grad_centered)
        grad_x = None
        if needs[0]:
            dtype = grad_z.dtype
            grad_x = _standardize_backward(grad_z, centered, self.inv_std,
                                           total_grad.astype(dtype).reshape(1, -1, 1),
                                           total_grad_centered.astype(dtype).reshape(1, -1, 1),
                                           dtype.type(self.count), self.weight * self.inv_std).reshape(grad_y.shape)
        return (grad_x,
                (sum_grad_centered * self.inv_std).reshape(-1) if needs[1] else None,  # Σ grad_y·x̂, this rank
                sum_grad.reshape(-1) if needs[2] else None)


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------
def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5, comm=None):
    """``batch_norm`` whose training statistics are those of the whole batch, split between ``comm``'s ranks.

    Every rank calls it with its share of the batch, in the same order. training=False (or ``comm`` None or of
    size 1) is ``batch_norm`` itself. The running statistics blend in the global mean and the unbiased
    global variance, so they stay the same on every rank.
    """
    if not training or comm is None or comm.size == 1:
        return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    input = as_tensor(input)
    _check_channel_vectors("sync_batch_norm", input, (("running_mean", running_mean), ("running_var", running_var),
                                                      ("weight", weight), ("bias", bias)))
    if (running_mean is None) != (running_var is None):
        raise ValueError("sync_batch_norm: give both running_mean and running_var, or neither")
    weight, bias = _affine_tensors(input, weight, bias)
    function = SyncBatchNormFunction(comm, eps)
    y = function(input, weight, bias)
    if function.count <= 1:
        raise ValueError(f"sync_batch_norm: expected more than 1 value per channel over all ranks when training, "
                         f"got {int(function.count)}")
    if running_mean is not None:
        unbiased_var = function.var.reshape(-1) * input.dtype.type(function.count / (function.count - 1))
        _update_running(running_mean, function.mean.reshape(-1), momentum)
        _update_running(running_var, unbiased_var, momentum)
    return y
