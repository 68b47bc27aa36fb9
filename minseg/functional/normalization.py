"""Batch normalization: normalize each channel by its mean and variance, then scale and shift.

In training the statistics are the current batch's own (so the gradient must flow
through them too), and running averages of them are kept for evaluation, where the
normalization becomes a fixed per-channel affine map.
"""
from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module

__all__ = ["batch_norm"]


def _channel_view(values, ndim):
    """A per-channel vector (C,) shaped (1, C, 1, ...) to broadcast against an ndim-d input."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def _channel_sum(x):
    """Σ over every axis but the channel axis 1, as a (C,) array."""
    return x.sum(axis=(0,) + tuple(range(2, x.ndim)))


def _channel_dot(a, b):
    """Σ a·b over every axis but the channel axis 1, without materializing a·b.

    Written as a batch of (1 × M) @ (M × 1) products, one per (sample, channel): BLAS
    reads both arrays once and allocates nothing the size of x.
    """
    n, c = a.shape[:2]
    products = a.reshape(n, c, 1, -1) @ b.reshape(n, c, -1, 1)
    return products.reshape(n, c).sum(axis=0)


class BatchNorm(Function):
    """y = γ·x̂ + β per channel, x̂ = (x − μ) / √(σ² + ε).

    Training (μ, σ² = this batch's mean and biased variance over the M = N·H·W values of
    each channel): μ and σ² depend on every x, which adds two terms to the gradient.
    With g = γ·gy the gradient for x̂, the chain rule through μ and σ² gives

        dx = (1/σ) · (g − mean(g) − x̂ · mean(g · x̂))      (means per channel)

    the gradient with its component along the constant direction (what the mean
    subtraction removes) and along x̂ (what the variance scaling removes) projected
    out. Equivalently dx = γ/(M·σ) · (M·gy − Σgy − x̂·Σ(gy·x̂)).
    Evaluation (μ, σ² = running statistics, constants): dx = γ/σ · gy.
    Both modes: dγ = Σ gy·x̂ and dβ = Σ gy.
    """

    def __init__(self, eps, mean=None, var=None):
        """Batch statistics when ``mean``/``var`` are None, otherwise these fixed ones."""
        self.eps, self.training = eps, mean is None
        self.mean, self.var = mean, var

    def forward(self, x, weight, bias):
        dtype = x.dtype.type
        centered = None
        if self.training:
            self.mean = x.mean(axis=(0,) + tuple(range(2, x.ndim)))
            centered = x - _channel_view(self.mean, x.ndim)
            self.var = _channel_dot(centered, centered) / dtype(x.size // x.shape[1])  # biased
        self.inv_std = 1 / get_array_module(x).sqrt(self.var + dtype(self.eps))
        self.weight = weight
        scale = weight * self.inv_std
        # Keep x, not x̂ (as PyTorch does): the centering buffer can then become y in place,
        # so forward allocates one x-sized array; backward rebuilds x̂ from x.
        self.x = x if (self.training or self.needs_input_grad[1]) else None
        if centered is None:  # evaluation: one fixed affine map per channel
            y = x * _channel_view(scale, x.ndim)
            y += _channel_view(bias - self.mean * scale, x.ndim)
            return y
        centered *= _channel_view(scale, x.ndim)  # becomes y, in place
        centered += _channel_view(bias, x.ndim)
        return centered

    def backward(self, grad_y):
        ndim, needs = grad_y.ndim, self.needs_input_grad
        grad_bias = _channel_sum(grad_y) if (needs[2] or self.training) else None
        grad_weight = None
        if self.x is not None:
            centered = self.x - _channel_view(self.mean, ndim)  # x̂·σ
            grad_weight = _channel_dot(grad_y, centered) * self.inv_std  # Σ gy·x̂

        grad_x = None
        if needs[0] and not self.training:
            grad_x = grad_y * _channel_view(self.weight * self.inv_std, ndim)
        elif needs[0]:
            count = grad_y.dtype.type(grad_y.size // grad_y.shape[1])
            # dx = γ/σ · (gy − mean(gy) − x̂·mean(gy·x̂)), built in place in the x̂·σ buffer
            grad_x = centered
            grad_x *= _channel_view(self.inv_std * grad_weight / count, ndim)  # x̂·mean(gy·x̂)
            grad_x += _channel_view(grad_bias / count, ndim)
            get_array_module(grad_y).subtract(grad_y, grad_x, out=grad_x)
            grad_x *= _channel_view(self.weight * self.inv_std, ndim)
        return (grad_x,
                grad_weight if needs[1] else None,
                grad_bias if needs[2] else None)


def _as_array(values):
    return values.data if isinstance(values, Tensor) else values


def _update_running(running, batch_value, momentum):
    """running ← (1 − momentum)·running + momentum·batch, in place (a Tensor buffer keeps its identity)."""
    array = _as_array(running)
    array *= 1 - momentum
    array += momentum * batch_value.astype(array.dtype, copy=False)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization over every axis but the channels (axis 1), as ``torch.nn.functional.batch_norm``.

    training=True: normalize by this batch's statistics and, when running_mean/running_var
    are given (Tensors or arrays, updated in place), blend the batch mean and the
    *unbiased* batch variance into them with weight ``momentum`` (PyTorch's rule).
    training=False: normalize by running_mean/running_var.
    weight (γ) and bias (β) default to 1 and 0.
    """
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: x must have a channel axis (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    for name, value in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
        if value is not None and tuple(value.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(value.shape)} but x has {channels} channels")
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and value.dtype != x.dtype:
            raise TypeError(f"batch_norm: {name} is {value.dtype} but x is {x.dtype}; convert one with .astype()")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    values_per_channel = x.size // channels
    if training and values_per_channel <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of shape "
                         f"{x.shape} (a batch of one 1×1 image has no variance to normalize by)")

    xp = get_array_module(x.data)
    weight = Tensor(xp.ones(channels, x.dtype)) if weight is None else as_tensor(weight)
    bias = Tensor(xp.zeros(channels, x.dtype)) if bias is None else as_tensor(bias)
    if not training:
        mean = _as_array(running_mean).astype(x.dtype, copy=False)
        var = _as_array(running_var).astype(x.dtype, copy=False)
        return BatchNorm(eps, mean, var)(x, weight, bias)

    function = BatchNorm(eps)
    y = function(x, weight, bias)
    if running_mean is not None:
        unbiased_var = function.var * x.dtype.type(values_per_channel / (values_per_channel - 1))
        _update_running(running_mean, function.mean, momentum)
        _update_running(running_var, unbiased_var, momentum)
    return y
