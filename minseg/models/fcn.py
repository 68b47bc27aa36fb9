"""FCN (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015): a
classification network made fully convolutional, its coarse class scores upsampled back to the image.

A classifier's last layers score the whole image; as 1×1 convolutions they score every position of its deepest
feature map instead, at 1/32 of the input resolution. FCN-32s upsamples those scores straight to the input size:
the masks are blobs. FCN-16s and FCN-8s add "skips": the stride-32 scores are upsampled ×2 by a LEARNED
transposed convolution that starts as bilinear interpolation (``bilinear_kernel``) and added to 1×1 scores of the
stride-16 features (FCN-16s), and once more to those of the stride-8 features (FCN-8s), before the last, fixed,
bilinear upsampling. Each skip hands the prediction finer "where" information from a shallower layer.

The paper builds on VGG-16 (with its fully connected layers turned into 7×7 and 1×1 convolutions); here the
encoder is minseg's ResNet-18/34 (``models/resnet.py``), whose stride 8, 16 and 32 features play the parts of VGG's
pool3, pool4 and conv7. As in the paper the score layers start at zero, so training starts from "predict nothing"
and the skips begin as no-ops.

The final upsampling to the input size is ``F.interpolate(mode="bilinear", align_corners=False)``: the paper's
fixed bilinear deconvolution computes the same numbers except in the outer half-stride border, where the
deconvolution fades to zero and interpolate repeats the edge (``bilinear_upsampling`` says exactly how). The
interpolation is cheaper than a deconvolution whose kernel is 64×64 for ×32.
"""
import numpy as np

from .. import nn
from ..functional import interpolate
from .resnet import ResNetEncoder
from .sizes import check_divisible

__all__ = ["FCN", "FCN32s", "FCN16s", "FCN8s", "bilinear_kernel", "bilinear_upsampling"]


# ---------------------------------------------------------------------------
# Bilinear interpolation as a transposed convolution
# ---------------------------------------------------------------------------
def bilinear_kernel(channels, factor):
    """The (channels, channels, 2f, 2f) weight that makes a transposed convolution upsample each channel by f.

    kernel[a, b] = (1 − |a − c| / f) · (1 − |b − c| / f) with centre c = f − ½: the weight with which an input
    pixel reaches each output pixel of its 2f × 2f footprint, falling off linearly with the distance between
    their centres measured in input pixels. Channel i only feeds channel i (the weight is diagonal in the channels).
    """
    size = 2 * factor
    centre = factor - 0.5
    profile = 1 - np.abs(np.arange(size) - centre) / factor
    weight = np.zeros((channels, channels, size, size), np.float32)
    weight[np.arange(channels), np.arange(channels)] = np.outer(profile, profile)
    return weight


def bilinear_upsampling(channels, factor):
    """ConvTranspose2d(channels, channels, 2f, stride f, padding f/2, no bias) initialized to ``bilinear_kernel``.

    Its output is H·f × W·f and equals ``F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)``
    on all but the outer f/2 rows and columns. There the transposed convolution sees zeros beyond the border (it
    equals interpolate applied to x padded with one ring of zeros, then cropped), while interpolate clamps its
    sampling position and repeats the edge pixel. ``factor`` must be even (so the padding f/2 is whole).
    The weight stays learnable: bilinear is where training starts, not where it must stay.
    """
    if factor < 2 or factor % 2:
        raise ValueError(f"bilinear_upsampling: factor must be an even integer >= 2, got {factor!r}")
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    layer.weight.data = bilinear_kernel(channels, factor)
    return layer


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
def zero_conv1x1(in_channels, out_channels):
    """A 1×1 score convolution with weight and bias at zero (the paper's initialization of its score layers)."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    conv.weight.data = np.zeros_like(conv.weight.data)
    conv.bias.data = np.zeros_like(conv.bias.data)
    return conv


class FCN(nn.Module):
    """FCN with skips from the stride-16 and stride-8 features (``skips`` 0, 1, 2: FCN-32s, -16s, -8s).

    scores = score32(f32); for each skip s: scores = up2(scores) + score_s(f_s); then bilinear to the input size.
    With ResNet-18 and 32 classes: 11,192,928 parameters for FCN-32s, 11,217,536 for FCN-16s and 11,238,048 for
    FCN-8s (``tests/test_fcn.py`` derives them).
    """

    size_multiple = 32  # the encoder's total stride

    def __init__(self, num_classes, in_channels=3, encoder="resnet18", skips=2):
        super().__init__()
        if skips not in (0, 1, 2):
            raise ValueError(f"FCN: skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s), got {skips!r}")
        self.skips = skips
        self.encoder = ResNetEncoder(encoder, in_channels=in_channels)
        # encoder.out_channels[-1], [-2], [-3]: the stride-32, 16 and 8 features (512, 256, 128 for ResNet-18).
        widths = self.encoder.out_channels[::-1][:skips + 1]
        self.score = nn.ModuleList([zero_conv1x1(width, num_classes) for width in widths])
        self.upsample = nn.ModuleList([bilinear_upsampling(num_classes, 2) for _ in range(skips)])

    def forward(self, x):
        check_divisible(x, self.size_multiple, f"FCN-{32 >> self.skips}s")
        features = self.encoder(x)[::-1]  # stride 32 first
        scores = self.score[0](features[0])
        for up2, score, feature in zip(self.upsample, self.score[1:], features[1:]):
            scores = up2(scores) + score(feature)  # the skip: finer scores added to the upsampled coarse ones
        return interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=False)

    def extra_repr(self):
        return f"FCN-{32 >> self.skips}s"


class FCN32s(FCN):
    """FCN-32s: the stride-32 scores, bilinearly upsampled ×32."""

    def __init__(self, num_classes, in_channels=3, encoder="resnet18"):
        super().__init__(num_classes, in_channels, encoder, skips=0)


class FCN16s(FCN):
    """FCN-16s: one skip, from the stride-16 features."""

    def __init__(self, num_classes, in_channels=3, encoder="resnet18"):
        super().__init__(num_classes, in_channels, encoder, skips=1)


class FCN8s(FCN):
    """FCN-8s: two skips, from the stride-16 and stride-8 features."""

    def __init__(self, num_classes, in_channels=3, encoder="resnet18"):
        super().__init__(num_classes, in_channels, encoder, skips=2)
