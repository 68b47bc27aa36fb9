"""The detection FPN (Lin et al. 2017): a ResNet encoder and its feature pyramid P2 … P6, as Mask R-CNN uses it.

The semantic ``FPN`` (``fpn.py``) builds the same top-down pyramid and then merges it into one map. A detector
keeps the levels apart instead: each gets a 3x3 conv that smooths the sum of the upsampled coarser level and the
lateral connection, and small objects are looked for on the fine levels, large ones on the coarse levels. P6 is P5
max-pooled with kernel 1 and stride 2 (every second pixel), a level for the RPN's largest anchors only.

``FPNBackbone`` returns a list ``[P2, P3, P4, P5, P6]`` at strides 4, 8, 16, 32, 64, all with ``out_channels``
channels. The top-down step is ``fpn.FPNBlock``, the one the semantic FPN uses; the names of the 3x3 smoothing
convs are torchvision's (``layer_blocks``).

``encoder`` is one of minseg's ResNets ("resnet18", "resnet34") or "resnet_small": the same BasicBlock stages,
one block per stage at widths ``width`` · (1, 2, 4, 8), small enough for a detector to train on a laptop CPU.
"""
from .. import functional as F
from .. import nn
from .encoder_decoder import make_encoder
from .fpn import FPNBlock
from .resnet import kaiming_normal_fan_out, resnet_stage

__all__ = ["FPNBackbone", "SmallResNetEncoder", "DETECTION_ENCODERS", "make_detection_encoder"]

DETECTION_ENCODERS = ("resnet18", "resnet34", "resnet_small")


# ---------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------
class SmallResNetEncoder(nn.Module):
    """A narrow, shallow ResNet with ``ResNetEncoder``'s strides and output list (strides 1, 2, 4, 8, 16, 32).

    Stem: conv 7x7 stride 2 to ``width`` channels, BatchNorm, ReLU, max-pool 3x3 stride 2; then four stages of
    ``blocks`` BasicBlocks at widths ``width`` · (1, 2, 4, 8), the last three starting with stride 2.
    """

    def __init__(self, in_channels=3, width=16, blocks=(1, 1, 1, 1)):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"SmallResNetEncoder: blocks must be four positive block counts, got {blocks!r}")
        widths = tuple(width * 2 ** index for index in range(4))
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_widths = (width,) + widths[:-1]
        for index in range(4):
            setattr(self, f"layer{index + 1}",
                    resnet_stage(in_widths[index], widths[index], blocks[index], 1 if index == 0 else 2, 1))
        self.out_channels = (in_channels, width) + widths
        self.output_stride = 32
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal_fan_out(module)

    def forward(self, x):
        stem = self.relu(self.bn1(self.conv1(x)))
        features = [x, stem, self.layer1(self.maxpool(stem))]
        for stage in (self.layer2, self.layer3, self.layer4):
            features.append(stage(features[-1]))
        return features


def make_detection_encoder(encoder, in_channels=3, width=16):
    """The encoder called ``encoder`` (one of ``DETECTION_ENCODERS``); ``width`` is read by "resnet_small" only."""
    if encoder == "resnet_small":
        return SmallResNetEncoder(in_channels, width)
    if encoder not in DETECTION_ENCODERS:
        raise ValueError(f"FPNBackbone: encoder must be one of {', '.join(map(repr, DETECTION_ENCODERS))}, "
                         f"got {encoder!r}")
    return make_encoder(encoder, in_channels)


# ---------------------------------------------------------------------------
# The pyramid
# ---------------------------------------------------------------------------
class FPNBackbone(nn.Module):
    """encoder → lateral 1x1 convs and top-down sums (``FPNBlock``) → a 3x3 conv per level; P6 = P5 subsampled.

    ``forward(x)`` returns ``[P2, P3, P4, P5, P6]``; ``strides`` lists their strides, ``out_channels`` their
    channel count. The lateral and smoothing convs start as torchvision's FPN: Kaiming-uniform (a=1), zero bias.
    """

    strides = (4, 8, 16, 32, 64)

    def __init__(self, encoder="resnet18", in_channels=3, out_channels=256, width=16):
        super().__init__()
        self.encoder = make_detection_encoder(encoder, in_channels, width)
        self.out_channels = out_channels
        c2, c3, c4, c5 = self.encoder.out_channels[-4:]
        self.p5 = nn.Conv2d(c5, out_channels, 1)
        self.p4 = FPNBlock(out_channels, c4)
        self.p3 = FPNBlock(out_channels, c3)
        self.p2 = FPNBlock(out_channels, c2)
        self.layer_blocks = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(4)])
        for module in [self.p5, self.p4, self.p3, self.p2, self.layer_blocks]:
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_uniform_(layer.weight, a=1)
                    nn.init.zeros_(layer.bias)

    @property
    def size_multiple(self):
        """Height and width must be multiples of the encoder's stride, 32, for the top-down sums to line up."""
        return self.encoder.output_stride

    def forward(self, x):
        c2, c3, c4, c5 = self.encoder(x)[-4:]
        p5 = self.p5(c5)
        p4 = self.p4(p5, c4)
        p3 = self.p3(p4, c3)
        p2 = self.p2(p3, c2)
        pyramid = [block(p) for block, p in zip(self.layer_blocks, (p2, p3, p4, p5))]
        return pyramid + [F.max_pool2d(pyramid[-1], 1, stride=2)]
