"""Inception-v4 (Szegedy et al. 2017, "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning") as a segmentation encoder.

An Inception block looks at the same map through several filter sizes side by side (a 1x1 conv; a 3x3 or 7x7
receptive field; a pooled view) and concatenates what the branches find, so the network need not choose one scale
per layer. Large filters are factorized to stay cheap: a 7x7 field is a 1x7 conv then a 7x1 conv, and each branch
starts with a 1x1 conv that shrinks the channels first. Reduction blocks halve the resolution the same way, with
stride-2 branches beside a max-pool.

As segmentation_models_pytorch 0.6.0's ``InceptionV4Encoder`` does, every layer uses "same" padding (smp pads the
network's unpadded 3x3 convs and max-pools by 1), so each stride-2 layer exactly halves an even size and the
features come out at strides 1 … 32: after the stem's third conv (64 channels), after Mixed-4a (192), after the
third of the four Inception-A blocks (384), after the fourth of the seven Inception-B blocks (1024) and after the
last Inception-C block (1536), the ``features`` indices 2, 4, 8, 14 and 21 smp reads. Names are
pretrainedmodels' (``features.0.conv``, ``features.6.branch3.1.bn``), so smp's state dicts load here. Its
BatchNorms use eps=0.001, from the TensorFlow original. Pooling does the downsampling, so there is no dilated mode
and no DeepLab on it, as in smp.
"""
from .. import nn
from ..ops import cat

__all__ = ["InceptionV4Encoder", "INCEPTION_FEATURES"]

# The indices in ``features`` after which the encoder's five downsampled maps are taken (smp's ``_out_indexes``).
INCEPTION_FEATURES = {"inceptionv4": (2, 4, 8, 14, 21)}
OUT_CHANNELS = (64, 192, 384, 1024, 1536)


# ---------------------------------------------------------------------------
# Blocks: a conv unit, then blocks whose branches run side by side
# ---------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """conv (no bias, "same" padding k//2 per side) → BatchNorm (eps 0.001) → ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=stride, padding=(kh // 2, kw // 2),
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def chain(*layers):
    """BasicConv2d units one after another, each given as (in, out, kernel) or (in, out, kernel, stride)."""
    return nn.Sequential(*[BasicConv2d(*layer) for layer in layers])


def max_pool():
    return nn.MaxPool2d(3, stride=2, padding=1)


def avg_pool_then(in_channels, out_channels):
    """3x3 mean over the pixels inside the image (padding not counted), then a 1x1 conv: the pooled branch."""
    return nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                         BasicConv2d(in_channels, out_channels, 1))


class Branches(nn.Module):
    """The Inception idea: ``cat([branch(x) for branch in branches], 1)``, branches in the order of ``names``.

    Each subclass names its branches as pretrainedmodels does (``branch0`` … or ``maxpool`` and ``conv``).
    """

    names = ("branch0", "branch1", "branch2", "branch3")

    def forward(self, x):
        return cat([getattr(self, name)(x) for name in self.names], 1)


class Mixed3a(Branches):
    """Stride 2: a max-pool (64 channels) beside a 3x3 stride-2 conv (96)."""

    names = ("maxpool", "conv")

    def __init__(self):
        super().__init__()
        self.maxpool = max_pool()
        self.conv = BasicConv2d(64, 96, 3, 2)


class Mixed4a(Branches):
    """1x1 then 3x3, beside 1x1, 1x7, 7x1 then 3x3: 96 + 96 channels."""

    names = ("branch0", "branch1")

    def __init__(self):
        super().__init__()
        self.branch0 = chain((160, 64, 1), (64, 96, 3))
        self.branch1 = chain((160, 64, 1), (64, 64, (1, 7)), (64, 64, (7, 1)), (64, 96, 3))


class Mixed5a(Branches):
    """Stride 2: a 3x3 stride-2 conv (192 channels) beside a max-pool (192)."""

    names = ("conv", "maxpool")

    def __init__(self):
        super().__init__()
        self.conv = BasicConv2d(192, 192, 3, 2)
        self.maxpool = max_pool()


class InceptionA(Branches):
    """384 → 384 at stride 8: 1x1; 1x1 → 3x3; 1x1 → 3x3 → 3x3 (a 5x5 field); pooled → 1x1; 96 channels each."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(384, 96, 1)
        self.branch1 = chain((384, 64, 1), (64, 96, 3))
        self.branch2 = chain((384, 64, 1), (64, 96, 3), (96, 96, 3))
        self.branch3 = avg_pool_then(384, 96)


class ReductionA(Branches):
    """384 → 1024, stride 2: 3x3 stride 2 (384); 1x1 → 3x3 → 3x3 stride 2 (256); max-pool (384)."""

    names = ("branch0", "branch1", "branch2")

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(384, 384, 3, 2)
        self.branch1 = chain((384, 192, 1), (192, 224, 3), (224, 256, 3, 2))
        self.branch2 = max_pool()


class InceptionB(Branches):
    """1024 → 1024 at stride 16, 7x7 fields factorized: 1x1 (384); 1x1 → 1x7 → 7x1 (256);
    1x1 → 7x1 → 1x7 → 7x1 → 1x7 (256); pooled → 1x1 (128)."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(1024, 384, 1)
        self.branch1 = chain((1024, 192, 1), (192, 224, (1, 7)), (224, 256, (7, 1)))
        self.branch2 = chain((1024, 192, 1), (192, 192, (7, 1)), (192, 224, (1, 7)), (224, 224, (7, 1)),
                             (224, 256, (1, 7)))
        self.branch3 = avg_pool_then(1024, 128)


class ReductionB(Branches):
    """1024 → 1536, stride 2: 1x1 → 3x3 stride 2 (192); 1x1 → 1x7 → 7x1 → 3x3 stride 2 (320); max-pool (1024)."""

    names = ("branch0", "branch1", "branch2")

    def __init__(self):
        super().__init__()
        self.branch0 = chain((1024, 192, 1), (192, 192, 3, 2))
        self.branch1 = chain((1024, 256, 1), (256, 256, (1, 7)), (256, 320, (7, 1)), (320, 320, 3, 2))
        self.branch2 = max_pool()


class InceptionC(nn.Module):
    """1536 → 1536 at stride 32. Two branches fork once more, a 1x3 and a 3x1 conv side by side on one map:
    1x1 (256); 1x1 → [1x3 | 3x1] (512); 1x1 → 3x1 → 1x3 → [1x3 | 3x1] (512); pooled → 1x1 (256)."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(1536, 256, 1)
        self.branch1_0 = BasicConv2d(1536, 384, 1)
        self.branch1_1a = BasicConv2d(384, 256, (1, 3))
        self.branch1_1b = BasicConv2d(384, 256, (3, 1))
        self.branch2_0 = BasicConv2d(1536, 384, 1)
        self.branch2_1 = BasicConv2d(384, 448, (3, 1))
        self.branch2_2 = BasicConv2d(448, 512, (1, 3))
        self.branch2_3a = BasicConv2d(512, 256, (1, 3))
        self.branch2_3b = BasicConv2d(512, 256, (3, 1))
        self.branch3 = avg_pool_then(1536, 256)

    def forward(self, x):
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return cat([self.branch0(x), self.branch1_1a(x1), self.branch1_1b(x1),
                    self.branch2_3a(x2), self.branch2_3b(x2), self.branch3(x)], 1)


# ---------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------
class InceptionV4Encoder(nn.Module):
    """pretrainedmodels' Inception-v4 ``features`` without its classifier; ``forward`` returns strides 1 … 32.

    ``depth`` (1 … 5): how many feature maps past the input ``forward`` returns, as smp's ``encoder_depth``; it
    stops at the last one needed, but every block is built, so the state dict is always smp's. ``output_stride``
    must be 32: there is no dilated mode. ``out_channels``: (in_channels, 64, 192, 384, 1024, 1536) at depth 5.
    """

    def __init__(self, name="inceptionv4", in_channels=3, output_stride=32, depth=5):
        super().__init__()
        if name not in INCEPTION_FEATURES:
            raise ValueError(f"InceptionV4Encoder: name must be one of {', '.join(map(repr, INCEPTION_FEATURES))}, "
                             f"got {name!r}")
        if output_stride != 32:
            raise ValueError(f"InceptionV4Encoder: output_stride must be 32, got {output_stride!r}; Inception-v4 "
                             f"downsamples by pooling, which has no dilated mode")
        if depth not in (1, 2, 3, 4, 5):
            raise ValueError(f"InceptionV4Encoder: depth must be an int from 1 to 5, got {depth!r}")
        self.name, self.depth = name, depth
        stem = [BasicConv2d(in_channels, 32, 3, 2), BasicConv2d(32, 32, 3), BasicConv2d(32, 64, 3),
                Mixed3a(), Mixed4a(), Mixed5a()]
        self.features = nn.Sequential(*stem, *[InceptionA() for _ in range(4)], ReductionA(),
                                      *[InceptionB() for _ in range(7)], ReductionB(),
                                      *[InceptionC() for _ in range(3)])
        self.out_channels = ((in_channels,) + OUT_CHANNELS)[:depth + 1]
        self.output_stride = 2 ** depth
        self.feature_indices = INCEPTION_FEATURES[name][:depth]

    def forward(self, x):
        features = [x]
        for index, block in enumerate(self.features[:self.feature_indices[-1] + 1]):
            x = block(x)
            if index in self.feature_indices:
                features.append(x)
        return features

    def extra_repr(self):
        return f"{self.name!r}, depth={self.depth}"
