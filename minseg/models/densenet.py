"""DenseNet-121 (Huang et al. 2017, "Densely Connected Convolutional Networks") as a segmentation encoder.

Inside a dense block every layer reads the concatenation of the block's input and of everything the layers before it
produced, and adds ``growth_rate`` (32) new channels to that pile: ``x = cat([x, layer(x)])``. Features are reused
instead of recomputed, so each layer can stay narrow (a 1x1 "bottleneck" to 128 channels, then a 3x3 conv to 32),
and every layer has a short path to the loss. Between blocks a transition (BatchNorm, ReLU, 1x1 conv halving the
channels, 2x2 average pooling) halves the resolution. A ResNet adds a block's input to its output; a DenseNet keeps
the input and appends, the same contrast as LinkNet's and UNet's skip connections.

As an encoder it returns the maps at strides 1 … 32 as segmentation_models_pytorch 0.6.0's ``DenseNetEncoder``
does: each stage's map is taken after the next transition's BatchNorm and ReLU (before its conv and pooling), the
deepest after ``norm5``. Layers and names are torchvision's (``features.conv0``, ``features.denseblock1.denselayer1
.norm1``, ``features.transition1.conv``, ``features.norm5``), so smp's and torchvision's state dicts load here.
It downsamples by pooling and has no dilated mode, so it cannot serve DeepLab, as in smp.
"""
import math

import numpy as np

from .. import nn
from ..ops import cat
from ..random import generator

__all__ = ["DenseNetEncoder", "DENSENET_BLOCKS"]

# Layers per dense block: torchvision's densenet121 (growth rate 32, 64 channels after the stem, bottleneck 4x32).
DENSENET_BLOCKS = {"densenet121": (6, 12, 24, 16)}
GROWTH_RATE, STEM_WIDTH, BOTTLENECK = 32, 64, 4


def kaiming_normal(conv):
    """torchvision's DenseNet initialization: weight ~ N(0, 2 / fan_in), fan_in = in_channels · kH · kW."""
    fan_in = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    std = math.sqrt(2.0 / fan_in)
    conv.weight.data = (std * generator().standard_normal(conv.weight.shape)).astype(np.float32)


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """conv2(relu(norm2(conv1(relu(norm1(x)))))): 1x1 conv to 4·growth channels, 3x3 conv to ``growth`` new ones.

    The pre-activation order (BatchNorm and ReLU before each conv) lets each layer normalize the concatenated pile
    it reads in its own way.
    """

    def __init__(self, in_channels, growth_rate=GROWTH_RATE):
        super().__init__()
        width = BOTTLENECK * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.Module):
    """``layers`` DenseLayers (``denselayer1`` …); each appends its channels to everything before it."""

    def __init__(self, layers, in_channels, growth_rate=GROWTH_RATE):
        super().__init__()
        for index in range(layers):
            setattr(self, f"denselayer{index + 1}", DenseLayer(in_channels + index * growth_rate, growth_rate))
        self.out_channels = in_channels + layers * growth_rate

    def forward(self, x):
        for layer in self.children():
            x = cat([x, layer(x)], 1)  # the dense connection: concatenation
        return x


class Transition(nn.Module):
    """BatchNorm → ReLU (the encoder's feature is taken here) → 1x1 conv halving the channels → 2x2 avg-pool."""

    def __init__(self, in_channels):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, in_channels // 2, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)

    def activate(self, x):
        return self.relu(self.norm(x))

    def forward(self, activated):
        return self.pool(self.conv(activated))


class DenseNetFeatures(nn.Module):
    """torchvision's ``densenet.features``: stem (``conv0``, ``norm0``, ``relu0``, ``pool0``), four dense blocks
    with a transition after each of the first three, ``norm5``. Only a namespace: the encoder's forward runs it."""

    def __init__(self, blocks, in_channels):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, STEM_WIDTH, 7, stride=2, padding=3, bias=False)
        self.norm0 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu0 = nn.ReLU()
        self.pool0 = nn.MaxPool2d(3, stride=2, padding=1)
        width = STEM_WIDTH
        for index, layers in enumerate(blocks):
            block = DenseBlock(layers, width)
            setattr(self, f"denseblock{index + 1}", block)
            width = block.out_channels
            if index < len(blocks) - 1:
                setattr(self, f"transition{index + 1}", Transition(width))
                width //= 2
        self.norm5 = nn.BatchNorm2d(width)


class DenseNetEncoder(nn.Module):
    """torchvision's DenseNet-121 without its classifier; ``forward`` returns the features at strides 1 … 32.

    ``depth`` (1 … 5): how many stages ``forward`` runs, as smp's ``encoder_depth`` (every stage is built, so the
    state dict is always torchvision's). ``output_stride`` must be 32: there is no dilated mode.
    ``out_channels``: (in_channels, 64, 256, 512, 1024, 1024) at depth 5.
    """

    def __init__(self, name="densenet121", in_channels=3, output_stride=32, depth=5):
        super().__init__()
        if name not in DENSENET_BLOCKS:
            raise ValueError(f"DenseNetEncoder: name must be one of {', '.join(map(repr, DENSENET_BLOCKS))}, "
                             f"got {name!r}")
        if output_stride != 32:
            raise ValueError(f"DenseNetEncoder: output_stride must be 32, got {output_stride!r}; DenseNet "
                             f"downsamples by pooling, which has no dilated mode")
        if depth not in (1, 2, 3, 4, 5):
            raise ValueError(f"DenseNetEncoder: depth must be an int from 1 to 5, got {depth!r}")
        self.name, self.depth = name, depth
        self.features = DenseNetFeatures(DENSENET_BLOCKS[name], in_channels)
        widths = [in_channels, STEM_WIDTH] + [getattr(self.features, f"transition{i}").norm.num_features
                                              for i in (1, 2, 3)] + [self.features.norm5.num_features]
        self.out_channels = tuple(widths[:depth + 1])
        self.output_stride = 2 ** depth
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal(module)

    def forward(self, x):
        f = self.features
        features = [x]
        stages = [lambda x: f.relu0(f.norm0(f.conv0(x))),
                  lambda x: f.transition1.activate(f.denseblock1(f.pool0(x))),
                  lambda x: f.transition2.activate(f.denseblock2(f.transition1(x))),
                  lambda x: f.transition3.activate(f.denseblock3(f.transition2(x))),
                  lambda x: f.norm5(f.denseblock4(f.transition3(x)))]
        for stage in stages[:self.depth]:
            features.append(stage(features[-1]))
        return features

    def extra_repr(self):
        return f"{self.name!r}, depth={self.depth}"
