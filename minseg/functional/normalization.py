"""Normalization: standardize groups of values by their mean and variance, then scale and shift per channel.

Batch norm's groups are the channels, each over the whole batch (N, H, W); in training the statistics are
the current batch's own, and running averages of them are kept for evaluation, where the normalization
becomes a fixed per-channel affine map. Group norm's groups are C/G channels of one sample (and their H, W),
so it never looks across the batch and is the same in training and evaluation.

Both view x as a 3-D array (A, B, K) whose statistics run over some of its axes: batch norm's is
(N, C, H·W) over axes (0, 2), one mean per channel; group norm's is (N, G, C/G·H·W) over axis 2, one mean per
sample and group. The standardization and its gradient, written once for such a view, are
``_standardize`` and ``_standardize_backward``; ``BatchNormFunction`` has the derivation.
"""
from ..arguments import positive_int
from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module

__all__ = ["batch_norm", "group_norm"]


# ---------------------------------------------------------------------------
# Standardization over some axes of an (A, B, K) view, and its gradient
# ---------------------------------------------------------------------------
def _dot_over(a, b, axes):
    """Σ a·b over ``axes`` ((0, 2) or (2,)) of two (A, B, K) arrays, kept as size-1 axes, without forming a·b.

    Written as a batch of (1 × K) @ (K × 1) products, one per (a, b) row: BLAS reads both arrays once and
    allocates nothing the size of x.
    """
    products = (a[:, :, None, :] @ b[:, :, :, None])[:, :, 0]  # (A, B, 1)
    return products.sum(axis=0, keepdims=True) if 0 in axes else products


def _sum_over(z, axes):
    """Σ z over ``axes`` ((0, 2) or (2,)) of an (A, B, K) array, kept as size-1 axes.

    As the product z @ ones(K), which BLAS runs on every core, where NumPy's sum runs on one.
    """
    sums = (z @ get_array_module(z).ones(z.shape[2], z.dtype))[:, :, None]
    return sums.sum(axis=0, keepdims=True) if 0 in axes else sums


def _count(z, axes):
    """How many values each statistic is taken over, in z's dtype."""
    count = 1
    for axis in axes:
        count *= z.shape[axis]
    return z.dtype.type(count)


def _standardize(z, axes, eps):
    """(z − μ, μ, σ², 1/√(σ² + ε)): μ and the biased variance σ² over ``axes``, kept as size-1 axes."""
    mean = _sum_over(z, axes) / _count(z, axes)
    centered = z - mean
    var = _dot_over(centered, centered, axes) / _count(z, axes)
    return centered, mean, var, 1 / get_array_module(z).sqrt(var + z.dtype.type(eps))


def _standardize_backward(grad, centered, inv_std, sum_grad, sum_grad_centered, count, scale):
    """scale · (g − mean(g) − x̂·mean(g·x̂)), g = ``grad``, x̂ = ``centered``·inv_std, means over ``count`` values.

    ``BatchNormFunction``'s docstring derives it. The callers pass Σg and Σg·(x − μ) per statistic (they
    need them for their parameter gradients too). Built in the ``centered`` buffer, which it overwrites.
    """
    grad_z = centered
    grad_z *= inv_std * inv_std * (sum_grad_centered / count)  # x̂·mean(g·x̂)
    grad_z += sum_grad / count
    grad_z -= grad
    grad_z *= -scale
    return grad_z


def _by_channel(x):
    """x as (N, C, H·W...): the view in which the per-channel weight and bias broadcast as (1, C, 1)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------
class BatchNormFunction(Function):
    """y = γ·x̂ + β per channel, x̂ = (x − μ) / σ, σ = √(σ² + ε).

    Training (μ, σ² = this batch's mean and biased variance over the K = N·H·W values of
    each channel): μ and σ² depend on every x, which adds two terms to the gradient.
    With g = γ·grad_y the gradient for x̂, and dμ/dx = 1/K, dσ/dx = x̂/K, the chain rule gives

        grad_x = (1/σ) · (g − mean(g) − x̂ · mean(g · x̂))      (means over the K values)

    the gradient with its component along the constant direction (what the mean
    subtraction removes) and along x̂ (what the variance scaling removes) projected
    out. γ is constant over a channel, so this is γ/σ · (grad_y − mean(grad_y) − x̂·mean(grad_y·x̂)).
    Evaluation (μ, σ² = running statistics, constants): grad_x = γ/σ · grad_y.
    Both modes: grad_γ = Σ grad_y·x̂ and grad_β = Σ grad_y.
    """

    axes = (0, 2)  # statistics over the batch and the pixels of the (N, C, H·W) view: one per channel

    def __init__(self, eps, mean=None, var=None):
        """Batch statistics when ``mean``/``var`` are None, otherwise these fixed (C,) ones."""
        self.eps, self.training = eps, mean is None
        if not self.training:
            self.mean, self.var = mean.reshape(1, -1, 1), var.reshape(1, -1, 1)

    def forward(self, x, weight, bias):
        z, weight, bias = _by_channel(x), weight.reshape(1, -1, 1), bias.reshape(1, -1, 1)
        if self.training:
            y, self.mean, self.var, self.inv_std = _standardize(z, self.axes, self.eps)
            y *= weight * self.inv_std  # the centering buffer becomes y, in place
            y += bias
        else:  # one fixed affine map per channel
            self.inv_std = 1 / get_array_module(x).sqrt(self.var + x.dtype.type(self.eps))
            y = z * (weight * self.inv_std)
            y += bias - self.mean * (weight * self.inv_std)
        # Keep x, not x̂ (as PyTorch does): the centering buffer became y, so forward allocates
        # one x-sized array; backward rebuilds x − μ from x.
        self.x = x if (self.training or self.needs_input_grad[1]) else None
        self.weight = weight
        return y.reshape(x.shape)

    def backward(self, grad_y):
        needs, grad_z = self.needs_input_grad, _by_channel(grad_y)
        sum_grad = _sum_over(grad_z, self.axes) if (needs[2] or self.training) else None
        sum_grad_centered = centered = None
        if self.x is not None:
            centered = _by_channel(self.x) - self.mean
            sum_grad_centered = _dot_over(grad_z, centered, self.axes)
        grad_x = None
        if needs[0] and self.training:
            grad_x = _standardize_backward(grad_z, centered, self.inv_std, sum_grad, sum_grad_centered,
                                           _count(grad_z, self.axes), self.weight * self.inv_std)
        elif needs[0]:
            grad_x = grad_z * (self.weight * self.inv_std)
        return (None if grad_x is None else grad_x.reshape(grad_y.shape),
                (sum_grad_centered * self.inv_std).reshape(-1) if needs[1] else None,  # Σ grad_y·x̂
                sum_grad.reshape(-1) if needs[2] else None)


class GroupNormFunction(Function):
    """y = γ_c·x̂ + β_c, x̂ = (x − μ)/σ with μ, σ² the mean and biased variance of each sample's group.

    Group g of sample n holds the C/G channels g·C/G … (g+1)·C/G − 1 and their pixels, K = C/G·H·W
    values. The standardization is batch norm's over another set of values, so its gradient is too
    (``BatchNormFunction``): with g = γ·grad_y, grad_x = (1/σ)·(g − mean(g) − x̂·mean(g·x̂)), means over
    each group's K values. γ now varies inside a group, so g is formed first. grad_γ_c = Σ_{n,h,w}
    grad_y·x̂ and grad_β_c = Σ_{n,h,w} grad_y.
    """

    axes = (2,)  # statistics over the (N, G, C/G·H·W) view's last axis: one per sample and group

    def __init__(self, num_groups, eps):
        self.num_groups, self.eps = num_groups, eps

    def _by_group(self, x):
        return x.reshape(x.shape[0], self.num_groups, -1)

    def forward(self, x, weight, bias):
        self.x, self.weight = x, weight  # backward rebuilds x − μ from x, as batch norm does
        centered, self.mean, _, self.inv_std = _standardize(self._by_group(x), self.axes, self.eps)
        y = _by_channel(centered.reshape(x.shape))  # the centering buffer becomes y, in place
        y *= self._inv_std_by_channel() * weight.reshape(1, -1, 1)
        y += bias.reshape(1, -1, 1)
        return y.reshape(x.shape)

    def _inv_std_by_channel(self):
        """1/σ of each channel's group, as (N, C, 1)."""
        channels_per_group = self.weight.shape[0] // self.num_groups
        return self.inv_std.repeat(channels_per_group, axis=1)

    def _sum_by_group(self, per_channel):
        """Σ over each group's channels of an (N, C, 1) array, as (N, G, 1)."""
        return per_channel.reshape(per_channel.shape[0], self.num_groups, -1).sum(axis=2, keepdims=True)

    def backward(self, grad_y):
        needs, grad_by_channel = self.needs_input_grad, _by_channel(grad_y)
        centered = self._by_group(self.x) - self.mean
        # Σ grad_y and Σ grad_y·(x − μ) per (n, c): every sum below is built from these two
        sums = _sum_over(grad_by_channel, (2,))
        dots = _dot_over(grad_by_channel, centered.reshape(grad_by_channel.shape), (2,))
        weight = self.weight.reshape(1, -1, 1)
        grad_x = None
        if needs[0]:
            grad_x_hat = self._by_group(grad_by_channel * weight)
            grad_x = _standardize_backward(grad_x_hat, centered, self.inv_std, self._sum_by_group(sums * weight),
                                           self._sum_by_group(dots * weight), _count(grad_x_hat, self.axes),
                                           self.inv_std).reshape(grad_y.shape)
        return (grad_x,
                (dots * self._inv_std_by_channel()).sum(axis=(0, 2)) if needs[1] else None,  # Σ grad_y·x̂
                sums.sum(axis=(0, 2)) if needs[2] else None)


# ---------------------------------------------------------------------------
# Public functions: argument checks, then one Function each
# ---------------------------------------------------------------------------
def _as_array(values):
    return values.data if isinstance(values, Tensor) else values


def _update_running(running, batch_value, momentum):
    """running ← (1 − momentum)·running + momentum·batch, in place (a Tensor buffer keeps its identity)."""
    array = _as_array(running)
    array *= 1 - momentum
    array += momentum * batch_value.astype(array.dtype, copy=False)


def _check_channel_vectors(where, input, vectors):
    """Each given (name, value) must be a (C,) vector; weight and bias must also have input's dtype."""
    if input.ndim < 2:
        raise ValueError(f"{where}: input must have a channel axis (N, C, ...), got shape {input.shape}")
    channels = input.shape[1]
    for name, value in vectors:
        if value is not None and tuple(value.shape) != (channels,):
            raise ValueError(f"{where}: {name} has shape {tuple(value.shape)} but input has {channels} channels")
        if value is not None and name in ("weight", "bias") and value.dtype != input.dtype:
            raise TypeError(f"{where}: {name} is {value.dtype} but input is {input.dtype}; "
                            f"convert one with .astype()")


def _affine_tensors(input, weight, bias):
    """weight (γ) and bias (β) as Tensors, 1 and 0 where not given."""
    xp, channels = get_array_module(input.data), input.shape[1]
    weight = Tensor(xp.ones(channels, input.dtype)) if weight is None else as_tensor(weight)
    bias = Tensor(xp.zeros(channels, input.dtype)) if bias is None else as_tensor(bias)
    return weight, bias


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization over every axis but the channels (axis 1), as ``torch.nn.functional.batch_norm``.

    training=True: normalize by this batch's statistics and, when running_mean/running_var
    are given (Tensors or arrays, updated in place), blend the batch mean and the
    *unbiased* batch variance into them with weight ``momentum`` (PyTorch's rule).
    training=False: normalize by running_mean/running_var.
    weight (γ) and bias (β) default to 1 and 0.
    """
    input = as_tensor(input)
    _check_channel_vectors("batch_norm", input, (("running_mean", running_mean), ("running_var", running_var),
                                                 ("weight", weight), ("bias", bias)))
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    values_per_channel = input.size // input.shape[1]
    if training and values_per_channel <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of shape "
                         f"{input.shape} (a batch of one 1×1 image has no variance to normalize by)")

    weight, bias = _affine_tensors(input, weight, bias)
    if not training:
        mean = _as_array(running_mean).astype(input.dtype, copy=False)
        var = _as_array(running_var).astype(input.dtype, copy=False)
        return BatchNormFunction(eps, mean, var)(input, weight, bias)

    function = BatchNormFunction(eps)
    y = function(input, weight, bias)
    if running_mean is not None:
        unbiased_var = function.var.reshape(-1) * input.dtype.type(values_per_channel / (values_per_channel - 1))
        _update_running(running_mean, function.mean.reshape(-1), momentum)
        _update_running(running_var, unbiased_var, momentum)
    return y


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization (Wu & He, 2018), as ``torch.nn.functional.group_norm``.

    Each sample's C channels form ``num_groups`` groups of C/num_groups consecutive channels; each group is
    normalized by its own mean and biased variance over its channels and pixels, then each channel is
    scaled by weight (γ, default 1) and shifted by bias (β, default 0). The same in training and evaluation.
    """
    input = as_tensor(input)
    _check_channel_vectors("group_norm", input, (("weight", weight), ("bias", bias)))
    num_groups = positive_int("group_norm", "num_groups", num_groups)
    if input.shape[1] % num_groups:
        raise ValueError(f"group_norm: the number of channels must be divisible by num_groups, got "
                         f"{input.shape[1]} channels (input of shape {input.shape}) and num_groups={num_groups}; "
                         f"pick num_groups among the divisors of {input.shape[1]}")
    weight, bias = _affine_tensors(input, weight, bias)
    return GroupNormFunction(num_groups, eps)(input, weight, bias)
