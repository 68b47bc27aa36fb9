"""SegNet (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for
Image Segmentation", TPAMI 2017): the decoder upsamples with the encoder's max-pooling INDICES.

Every 2×2 max-pool in the encoder remembers which of the four pixels held the maximum (the "pooling indices",
a couple of bits per window). The decoder stage of the same resolution puts each value back exactly there
(``max_unpool2d``) and zeros elsewhere, then convolutions fill in the sparse map. So the decoder needs no learned
upsampling, and, unlike UNet, it carries no feature maps across: only the indices, which is what made SegNet
cheap in memory at inference.

* ``SegNetBasic``: the paper's smaller network for its ablations: four encoder stages of [7×7 conv, 64 channels
  → BatchNorm → ReLU → max-pool], four decoder stages of [unpool → 7×7 conv → BatchNorm] (no bias, and no ReLU in
  the decoder, as the paper says), then a 1×1 classifier.
* ``SegNet``: the VGG-16-shaped network: the 13 convolutions of VGG-16 (with BatchNorm) in 5 pooled stages,
  and a mirrored decoder whose last convolution outputs the class scores.
"""
from .. import nn
from ..functional import max_pool2d, max_unpool2d
from .sizes import check_divisible

__all__ = ["SegNetBasic", "SegNet", "pool_with_indices", "unpool"]

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


# ---------------------------------------------------------------------------
# Pooling that remembers where the maxima were, and its partial inverse
# ---------------------------------------------------------------------------
def pool_with_indices(x):
    """2×2 max-pool; returns the pooled map and (indices, size) for ``unpool``."""
    pooled, indices = max_pool2d(x, 2, return_indices=True)
    return pooled, (indices, x.shape[2:])


def unpool(x, switches):
    """Each value of ``x`` goes back to the pixel its max-pool took it from; every other pixel is 0."""
    indices, size = switches
    return max_unpool2d(x, indices, 2, output_size=size)


def conv_bn(in_channels, out_channels, kernel_size, relu, bias):
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class _PooledEncoderDecoder(nn.Module):
    """forward: encoder stage → pool (keep indices), ...; then, deepest first, unpool → decoder stage; classifier.

    Subclasses set ``encoder`` and ``decoder`` (ModuleLists of equal length, decoder deepest first),
    ``classifier`` and ``description``.
    """

    @property
    def size_multiple(self):
        """Each encoder stage pools once, halving the resolution."""
        return 2 ** len(self.encoder)

    def forward(self, x):
        check_divisible(x, self.size_multiple, self.description)
        switches = []
        for stage in self.encoder:
            x, switch = pool_with_indices(stage(x))
            switches.append(switch)
        for stage, switch in zip(self.decoder, reversed(switches)):
            x = stage(unpool(x, switch))
        return self.classifier(x)


class SegNetBasic(_PooledEncoderDecoder):
    """SegNet-Basic: ``depth`` stages of ``width`` channels and ``kernel_size``² convolutions (paper: 4, 64, 7).

    Convolutions have no bias (BatchNorm follows each); the 1×1 classifier has one. With 3 input channels
    and 32 classes: 1,417,440 parameters (tests/test_segnet.py derives the count).
    """

    def __init__(self, num_classes, in_channels=3, width=64, depth=4, kernel_size=7):
        super().__init__()
        self.description = f"SegNetBasic with depth {depth}"
        self.encoder = nn.ModuleList([conv_bn(in_channels if i == 0 else width, width, kernel_size, True, False)
                                      for i in range(depth)])
        self.decoder = nn.ModuleList([conv_bn(width, width, kernel_size, False, False) for _ in range(depth)])
        self.classifier = nn.Conv2d(width, num_classes, 1)


class SegNet(_PooledEncoderDecoder):
    """The VGG-16-shaped SegNet; ``base`` scales every width (64 is VGG-16: 64, 128, 256, 512, 512).

    Encoder stage s: VGG-16's convolutions 3×3 → BatchNorm → ReLU. Decoder stage s mirrors it: the same number
    of convolutions, the last one narrowing to the width of the stage above; the shallowest decoder stage ends
    in a 3×3 convolution to ``num_classes`` (the paper's ``conv1_1_D``), which is the classifier. Convolutions
    keep their biases, as VGG-16's do. Total stride 32.
    """

    def __init__(self, num_classes, in_channels=3, base=64):
        super().__init__()
        self.description = "SegNet"
        stages = [tuple(width * base // 64 for width in stage) for stage in VGG16_STAGES]
        encoder, decoder, c_in = [], [], in_channels
        for stage in stages:
            encoder.append(nn.Sequential(*[conv_bn(a, b, 3, True, True) for a, b in zip((c_in,) + stage, stage)]))
            c_in = stage[-1]
        # Decoder, deepest first: stage widths reversed; the last conv of each goes to the next shallower width.
        for s in reversed(range(len(stages))):
            widths = stages[s][::-1] + ((stages[s - 1][-1],) if s > 0 else ())
            decoder.append(nn.Sequential(*[conv_bn(a, b, 3, True, True) for a, b in zip(widths, widths[1:])]))
        self.encoder, self.decoder = nn.ModuleList(encoder), nn.ModuleList(decoder)
        self.classifier = nn.Conv2d(stages[0][0], num_classes, 3, padding=1)
