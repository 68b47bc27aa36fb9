"""ResNet-18 and ResNet-34 (He et al. 2016, "Deep Residual Learning for Image Recognition") as segmentation encoders.

A ResNet block adds its input to what its two convolutions compute, ``relu(F(x) + x)``, so each block only has to
learn a correction; that is what lets 18 or 34 layers train. As an encoder it hands the decoder its feature maps at
every resolution, strides 1 (the input itself), 2, 4, 8, 16 and 32, the list segmentation_models_pytorch's encoders
return, and a decoder picks its skip connections from it.

The layers and their names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer4``, ``downsample.0/.1``), so
an ImageNet checkpoint loads with ``minseg.models.load_weights(model.encoder, path, strict=False)`` (its ``fc.*`` is
left out: an encoder has no classifier).

``output_stride=16`` or ``8`` keeps the last stages at a finer resolution for DeepLab: their stride-2 convolutions
run at stride 1 and every convolution in those stages is dilated instead (rate 2, or 2 then 4), which keeps each
layer's field of view as wide as it was ("atrous convolution"). As in smp, every convolution of a dilated stage gets
the stage's rate, including the stage's first conv and its 1x1 shortcut.
"""
import math

import numpy as np

from .. import nn
from ..ops import relu
from ..random import generator

__all__ = ["BasicBlock", "ResNetEncoder", "RESNET_BLOCKS"]

# Blocks per stage: torchvision's resnet18 and resnet34 (both use BasicBlock).
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def conv3x3(in_channels, out_channels, stride=1, dilation=1):
    """3x3 convolution whose padding keeps the size at stride 1; no bias, since a BatchNorm follows."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def kaiming_normal_fan_out(conv):
    """torchvision's ResNet initialization: weight ~ N(0, 2 / fan_out), fan_out = out_channels · kH · kW.

    The variance 2/fan_out keeps the gradients' scale from layer to layer through ReLUs (He et al. 2015).
    """
    fan_out = conv.weight.shape[0] * conv.weight.shape[2] * conv.weight.shape[3]
    std = math.sqrt(2.0 / fan_out)
    conv.weight.data = (std * generator().standard_normal(conv.weight.shape)).astype(np.float32)


def stage_geometry(output_stride):
    """(stride, dilation) of layer1 … layer4 for an encoder whose deepest map is at ``output_stride``.

    Stride 32 is the plain ResNet. Each stage that would go past ``output_stride`` keeps the resolution
    (stride 1) and dilates by how far past it would have gone: its nominal stride divided by output_stride.
    """
    geometry, nominal = [], 4  # layer1 works at stride 4 (after conv1 and the max-pool)
    for index in range(4):
        stride = 1 if index == 0 else 2
        nominal *= stride
        if nominal > output_stride:
            geometry.append((1, nominal // output_stride))
        else:
            geometry.append((stride, 1))
    return geometry


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)): two 3x3 convolutions and a skip that adds.

    ``downsample`` (1x1 conv + BatchNorm) replaces the identity shortcut in a stage's first block, which changes
    the channel count (and, without dilation, halves the resolution), so that the two terms have the same shape.
    """

    def __init__(self, in_channels, out_channels, stride=1, dilation=1, has_downsample=False):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride, dilation)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(out_channels, out_channels, 1, dilation)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if has_downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, dilation=dilation, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return relu(self.bn2(self.conv2(out)) + shortcut)


def resnet_stage(in_channels, out_channels, blocks, stride, dilation):
    """``blocks`` BasicBlocks; only the first may change the resolution or the width."""
    first = BasicBlock(in_channels, out_channels, stride, dilation, has_downsample=in_channels != out_channels)
    rest = [BasicBlock(out_channels, out_channels, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest)


class ResNetEncoder(nn.Module):
    """torchvision's ResNet-18/34 without its classifier; ``forward`` returns the features at strides 1 … 32.

    ``name``: "resnet18" or "resnet34". ``output_stride``: 32, 16 or 8 (see the module docstring).
    ``depth`` (1 … 5): how many of the five stages ``forward`` runs, as smp's ``encoder_depth`` (PSPNet uses 3);
    every stage is built regardless, so the state dict is always torchvision's.
    ``out_channels[i]`` is the channel count of ``forward(x)[i]``: (in_channels, 64, 64, 128, 256, 512) at depth 5.
    """

    def __init__(self, name="resnet18", in_channels=3, output_stride=32, depth=5):
        super().__init__()
        if name not in RESNET_BLOCKS:
            raise ValueError(f"ResNetEncoder: name must be one of {', '.join(map(repr, RESNET_BLOCKS))}, "
                             f"got {name!r}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"ResNetEncoder: output_stride must be 8, 16 or 32, got {output_stride!r}")
        if depth not in (1, 2, 3, 4, 5):
            raise ValueError(f"ResNetEncoder: depth must be an int from 1 to 5, got {depth!r}")
        self.name, self.depth = name, depth
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_widths = (64,) + STAGE_WIDTHS[:-1]
        for index, (blocks, (stride, dilation)) in enumerate(zip(RESNET_BLOCKS[name], stage_geometry(output_stride))):
            setattr(self, f"layer{index + 1}",
                    resnet_stage(in_widths[index], STAGE_WIDTHS[index], blocks, stride, dilation))
        self.out_channels = ((in_channels, 64) + STAGE_WIDTHS)[:depth + 1]
        # The stride of the deepest feature forward returns: 2 per stage run, until dilation takes over.
        self.output_stride = min(output_stride, 2 ** depth)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal_fan_out(module)

    def forward(self, x):
        features = [x]
        stages = [lambda x: self.relu(self.bn1(self.conv1(x))),
                  lambda x: self.layer1(self.maxpool(x)), self.layer2, self.layer3, self.layer4]
        for stage in stages[:self.depth]:
            features.append(stage(features[-1]))
        return features

    def extra_repr(self):
        return f"{self.name!r}, output_stride={self.output_stride}, depth={self.depth}"
