"""UNet (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation"): an
encoder–decoder whose skip connections CONCATENATE.

The encoder saves its feature map at every resolution before pooling; the decoder
upsamples and concatenates the saved map of the same resolution along the channel
axis, so fine detail lost by pooling comes straight back. (Joining by concatenation rather
than by addition, as ResNet does, is also what DenseNet does two years later.)

Two versions: ``PaperUNet`` is the paper's, built from scratch with ``base`` channels; ``Unet`` is
segmentation_models_pytorch's, a ResNet encoder (ImageNet weights can fill it) under a lighter
decoder, with smp's names and defaults.
"""
from .. import functional as F
from .. import nn
from ..autograd import Tensor
from ..backend import get_array_module
from ..ops import cat
from .encoder_decoder import SegmentationHead, SegmentationModel, conv_bn_relu, make_encoder
from .sizes import check_divisible

__all__ = ["PaperUNet", "Unet"]


def double_conv(in_channels, out_channels):
    """Two [conv 3x3 pad 1 → BatchNorm → ReLU]; the resolution is unchanged."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU())


class PaperUNet(nn.Module):
    """The paper's UNet with ``depth`` pooling steps; level i has base·2^i channels, the bottleneck base·2^depth.

    Every convolution keeps PyTorch's default bias, even where BatchNorm's mean
    subtraction makes it redundant, so the model matches the reference counts: with
    32 classes and depth 4, 7,767,008 parameters at base 32 and 1,944,576 at base 16.

    ``skips=False`` is the ablation of the course's page 3: every skip is replaced by zeros of the skip's
    shape, so each layer, width and parameter stays as it is and only the information the skips carry is
    taken away (the decoder's weights that read the skip channels then receive no gradient).
    """

    def __init__(self, num_classes, in_channels=3, base=32, depth=4, skips=True):
        super().__init__()
        self.skips = bool(skips)
        widths = [base * 2 ** level for level in range(depth + 1)]  # 32, 64, 128, 256, 512
        self.depth = depth
        self.size_multiple = 2 ** depth  # each pooling step halves the resolution
        self.encoder = nn.ModuleList([double_conv(c_in, c_out)
                                      for c_in, c_out in zip([in_channels] + widths[:-1], widths[:-1])])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(widths[-2], widths[-1])
        # Decoder, deepest level first: upsample (halving the channels), then two convs on
        # [skip, upsampled], which has twice the channels of the level.
        self.upsample = nn.ModuleList([nn.ConvTranspose2d(2 * width, width, 2, stride=2)
                                       for width in reversed(widths[:-1])])
        self.decoder = nn.ModuleList([double_conv(2 * width, width) for width in reversed(widths[:-1])])
        self.head = nn.Conv2d(base, num_classes, 1)

    def forward(self, x):
        check_divisible(x, self.size_multiple, f"PaperUNet with depth {self.depth}")
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, level, skip in zip(self.upsample, self.decoder, reversed(skips)):
            if not self.skips:  # the ablation: the same shape, no information
                skip = Tensor(get_array_module(skip.data).zeros_like(skip.data))
            x = level(cat([skip, upsample(x)], dim=1))  # the skip connection: concatenation
        return self.head(x)

    def extra_repr(self):
        return f"depth={self.depth}" + ("" if self.skips else ", skips=False")


# ---------------------------------------------------------------------------
# The segmentation_models version: a ResNet encoder, five decoder blocks
# ---------------------------------------------------------------------------
class UnetDecoderBlock(nn.Module):
    """Resize to the skip's size, concatenate the skip, then two [conv 3x3 → BatchNorm → ReLU]."""

    def __init__(self, in_channels, skip_channels, out_channels, use_norm=True, interpolation="nearest"):
        super().__init__()
        self.interpolation = interpolation
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.conv2 = conv_bn_relu(out_channels, out_channels, 3, padding=1, use_norm=use_norm)

    def forward(self, x, size, skip=None):
        x = F.interpolate(x, size=size, mode=self.interpolation)
        if skip is not None:
            x = cat([x, skip], 1)  # the skip connection: concatenation
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    """One block per encoder stage, deepest first; block i reads the previous block and the skip of its size.

    The last block climbs from stride 2 to the input's size with no skip: the stride-1 "feature" is the image.
    """

    def __init__(self, encoder_channels, decoder_channels, use_norm=True, interpolation="nearest"):
        super().__init__()
        deepest_first = list(encoder_channels[1:])[::-1]           # 512, 256, 128, 64, 64 for a ResNet-18
        in_channels = deepest_first[:1] + list(decoder_channels[:-1])
        skip_channels = deepest_first[1:] + [0]
        self.blocks = nn.ModuleList([UnetDecoderBlock(c_in, c_skip, c_out, use_norm, interpolation)
                                     for c_in, c_skip, c_out in zip(in_channels, skip_channels, decoder_channels)])

    def forward(self, features):
        sizes = [tuple(feature.shape[2:]) for feature in features][::-1]
        x, *skips = features[1:][::-1]
        for index, block in enumerate(self.blocks):
            x = block(x, sizes[index + 1], skips[index] if index < len(skips) else None)
        return x


class Unet(SegmentationModel):
    """smp's ``Unet``: a ResNet encoder, a UNet decoder with ``decoder_channels``, a 3x3 conv head.

    Options and defaults are smp 0.6.0's (``encoder_depth`` 3 … 5, one decoder channel count per stage).
    It takes any input size, as smp's does: each decoder block resizes to the size of the skip it joins.
    With 32 classes: 14,332,704 parameters (resnet18), 24,440,864 (resnet34).
    """

    requires_divisible_input = False

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, encoder_depth=5,
                 decoder_channels=(256, 128, 64, 32, 16), decoder_use_norm=True, decoder_interpolation="nearest"):
        super().__init__()
        if len(decoder_channels) != encoder_depth:
            raise ValueError(f"Unet: decoder_channels must have one entry per encoder stage ({encoder_depth}), "
                             f"got {tuple(decoder_channels)}")
        self.encoder = make_encoder(encoder, in_channels, depth=encoder_depth)
        self.decoder = UnetDecoder(self.encoder.out_channels, decoder_channels, decoder_use_norm,
                                   decoder_interpolation)
        self.segmentation_head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        self.initialize()
