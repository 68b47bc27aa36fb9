"""The layers of segmentation networks as Modules: each owns its parameters and calls one ``F`` function.

Constructor signatures, parameter shapes, defaults and initialization follow PyTorch,
so a model written for ``torch.nn`` reads the same here, and a PyTorch state_dict
(converted to NumPy arrays) loads into the same architecture.
"""
import math

import numpy as np

from .. import functional as F
from ..arguments import pair, positive_int
from ..functional.conv import conv_transpose2d_output_size
from . import init
from .module import Module, Parameter

__all__ = ["Conv2d", "ConvTranspose2d", "BatchNorm2d", "GroupNorm", "MaxPool2d", "MaxUnpool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "ReLU", "PReLU", "Dropout", "Dropout2d", "Upsample", "Identity"]


def _only_default(layer, name, value, default):
    """PyTorch options that minseg does not implement: accepted at their default, refused otherwise."""
    if value != default:
        raise NotImplementedError(f"{layer}: {name}={value!r} is not supported; minseg implements "
                                  f"{name}={default!r} only")


# ---------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------
class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: arguments, PyTorch's initialization, repr.

    ``weight_shape`` is the layer's layout: (out, in/groups, kH, kW) for the convolution,
    (in, out/groups, kH, kW) for the transposed one. PyTorch initializes both with
    weight and bias ~ U(±1/√fan_in), fan_in = weight.shape[1]·kH·kW.
    """

    def __init__(self, layer, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                 padding_mode, transposed):
        super().__init__()
        _only_default(layer, "padding_mode", padding_mode, "zeros")
        self.in_channels = positive_int(layer, "in_channels", in_channels)
        self.out_channels = positive_int(layer, "out_channels", out_channels)
        self.groups = positive_int(layer, "groups", groups)
        for name, channels in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if channels % self.groups:
                raise ValueError(f"{layer}: {name} must be divisible by groups, got {name}={channels} and "
                                 f"groups={self.groups}; pick groups that divides both channel counts")
        self.kernel_size = pair(layer, "kernel_size", kernel_size, minimum=1)
        self.stride = pair(layer, "stride", stride, minimum=1)
        self.padding = pair(layer, "padding", padding, minimum=0)
        self.dilation = pair(layer, "dilation", dilation, minimum=1)
        first, second = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.weight = Parameter(np.empty((first, second // self.groups) + self.kernel_size, np.float32))
        self.bias = Parameter(np.empty(out_channels, np.float32)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(init.calculate_fan_in_and_fan_out(self.weight)[0])
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        for name, default in (("padding", (0, 0)), ("output_padding", (0, 0)), ("dilation", (1, 1)), ("groups", 1)):
            if getattr(self, name, default) != default:
                text += f", {name}={getattr(self, name)}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution layer: weight (out_channels, in_channels/groups, kH, kW), bias (out_channels,).

    ``groups`` splits the channels into that many independent convolutions (groups =
    in_channels is a depthwise convolution); fan_in for the initialization is
    in_channels/groups·kH·kW, as PyTorch.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__("Conv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, transposed=False)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, dilation=self.dilation,
                        groups=self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed convolution layer (learned upsampling): weight (in_channels, out_channels/groups, kH, kW).

    Initialized as PyTorch, whose fan_in comes from the weight's dimension 1 — here
    out_channels·kH·kW — since it reuses the convolution's formula on this layout.
    ``forward(x, output_size)`` may ask for a specific (H, W) (or (N, C, H, W)) among the
    sizes the stride allows; it sets output_padding accordingly, as PyTorch.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__("ConvTranspose2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, transposed=True)
        self.output_padding = pair("ConvTranspose2d", "output_padding", output_padding, minimum=0)

    def _output_padding_for(self, x, output_size):
        """The output_padding that makes the output (H, W) equal ``output_size``."""
        wanted = tuple(output_size)[-2:]
        smallest = conv_transpose2d_output_size(x.shape[2:], self.kernel_size, self.stride, self.padding, (0, 0),
                                                self.dilation)
        for axis in range(2):
            if not smallest[axis] <= wanted[axis] <= smallest[axis] + self.stride[axis] - 1:
                raise ValueError(f"ConvTranspose2d: output_size {tuple(output_size)} is not reachable: for an "
                                 f"input of size {x.shape[2:]} the valid sizes along dim {2 + axis} range from "
                                 f"{smallest[axis]} to {smallest[axis] + self.stride[axis] - 1}")
        return tuple(w - s for w, s in zip(wanted, smallest))

    def forward(self, x, output_size=None):
        output_padding = self.output_padding if output_size is None else self._output_padding_for(x, output_size)
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, output_padding=output_padding,
                                  groups=self.groups, dilation=self.dilation)


# ---------------------------------------------------------------------------
# Normalization and regularization
# ---------------------------------------------------------------------------
def _scale_and_shift(num_channels, affine):
    """A normalization's learned γ (``weight``, ones) and β (``bias``, zeros) per channel, or (None, None)."""
    if not affine:
        return None, None
    return Parameter(np.ones(num_channels, np.float32)), Parameter(np.zeros(num_channels, np.float32))


class BatchNorm2d(Module):
    """Batch normalization over (N, H, W) per channel, with learned scale γ (weight) and shift β (bias).

    Buffers: running_mean (zeros), running_var (ones), num_batches_tracked. Training mode
    normalizes by batch statistics and updates the running ones with ``momentum``
    (momentum=None: a plain average over all batches seen); eval mode uses the running ones.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features = positive_int("BatchNorm2d", "num_features", num_features)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight, self.bias = _scale_and_shift(num_features, affine)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, np.float32))
            self.register_buffer("running_var", np.ones(num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected a 4-D input (N, C, H, W), got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: x has {x.shape[1]} channels but the layer was built for "
                             f"num_features={self.num_features}")
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=0.0 if momentum is None else momentum,
                            eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class GroupNorm(Module):
    """Group normalization (Wu & He, 2018): each sample's channels in ``num_groups`` groups, each group
    normalized by its own mean and variance, then a learned per-channel scale (weight) and shift (bias).

    Unlike BatchNorm it never looks across the batch, so it behaves the same in training and
    evaluation and with a batch of one. The math is ``F.group_norm``'s.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels must be divisible by num_groups, got num_channels="
                             f"{num_channels} and num_groups={num_groups}")
        self.eps, self.affine = eps, affine
        self.weight, self.bias = _scale_and_shift(num_channels, affine)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _DropoutNd(Module):
    """What Dropout and Dropout2d share: the probability p, checked once, and PyTorch's repr."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p is a probability and must be between 0 and 1, got {p}")
        self.p, self.inplace = p, inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zeroes each element with probability p in training mode (scaling the rest by 1/(1−p)); identity in eval."""

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class Dropout2d(_DropoutNd):
    """Spatial dropout: zeroes whole channels (N, C) with probability p in training mode; identity in eval.

    Neighbouring pixels of a feature map are strongly correlated, so dropping single pixels
    hardly regularizes a convolution; dropping a whole map does (Tompson et al., 2015; ENet).
    """

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)


# ---------------------------------------------------------------------------
# Pooling and resizing
# ---------------------------------------------------------------------------
class MaxPool2d(Module):
    """Max over kernel_size windows (stride defaults to kernel_size); ``return_indices`` for MaxUnpool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        _only_default("MaxPool2d", "dilation", dilation, 1)
        _only_default("MaxPool2d", "ceil_mode", ceil_mode, False)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxUnpool2d(Module):
    """Puts values back at the positions MaxPool2d(return_indices=True) found: ``unpool(x, indices)``."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, x, indices, output_size=None):
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Mean over kernel_size windows (stride defaults to kernel_size; zero padding is counted unless
    ``count_include_pad=False``)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        _only_default("AvgPool2d", "ceil_mode", ceil_mode, False)
        _only_default("AvgPool2d", "divisor_override", divisor_override, None)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return text if self.count_include_pad else text + ", count_include_pad=False"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, whatever the input size (PSPNet's pyramid pooling)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resizes to ``size`` or by ``scale_factor`` with F.interpolate ('nearest' or 'bilinear')."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size = size
        self.scale_factor = float(scale_factor) if np.isscalar(scale_factor) else scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        text = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return text + f", mode={self.mode!r}"


# ---------------------------------------------------------------------------
# Activation and plumbing
# ---------------------------------------------------------------------------
class ReLU(Module):
    """max(x, 0). ``inplace`` is accepted for PyTorch compatibility; minseg never overwrites x."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class PReLU(Module):
    """max(x, 0) + a · min(x, 0) with a learned slope a: one shared (num_parameters=1) or one per channel.

    weight has shape (num_parameters,), initialized to ``init`` (PyTorch's 0.25); the math is
    ``F.prelu``'s.
    """

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.num_parameters = positive_int("PReLU", "num_parameters", num_parameters)
        self.weight = Parameter(np.full(self.num_parameters, init, np.float32))

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for an optional layer). Arguments are ignored."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x
