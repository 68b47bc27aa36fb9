"""LinkNet (Chaurasia & Culurciello 2017, "LinkNet: Exploiting Encoder Representations for Efficient Semantic
Segmentation"): a ResNet-18 encoder whose skip connections ADD.

Each decoder block's output is added to the encoder feature map of the same size, as a
ResNet adds a block's input to its output. Addition (unlike UNet's concatenation) keeps
the channel count, so the decoder stays light: LinkNet spends most of its parameters
in the encoder and runs faster than a UNet of similar accuracy.

Two versions: ``PaperLinkNet`` is the paper's, from scratch with ``base`` channels (the course's
example trains it at base 16); ``Linknet`` is segmentation_models_pytorch's, whose decoder
differs (five blocks of 4x4 transposed convolutions and a 1x1 head instead of the paper's four
blocks and three-layer head), with torchvision's ResNet encoder and smp's names.
"""
from .. import nn
from .encoder_decoder import SegmentationHead, SegmentationModel, conv_bn_relu, make_encoder
from .resnet import resnet_stage
from .sizes import check_divisible

__all__ = ["PaperLinkNet", "Linknet"]


def decoder_block(in_channels, out_channels, stride):
    """1x1 conv (C → C/4), 3x3 transposed conv (upsamples by ``stride``), 1x1 conv (C/4 → out), each + BN + ReLU.

    Squeezing to C/4 channels around the expensive 3x3 convolution is what keeps the
    decoder cheap. ``output_padding = stride - 1`` makes the output exactly twice as large.
    """
    squeezed = in_channels // 4
    return nn.Sequential(conv_bn_relu(in_channels, squeezed, 1),
                         nn.ConvTranspose2d(squeezed, squeezed, 3, stride, padding=1, output_padding=stride - 1,
                                            bias=False),
                         nn.BatchNorm2d(squeezed), nn.ReLU(),
                         conv_bn_relu(squeezed, out_channels, 1))


class PaperLinkNet(nn.Module):
    """The paper's LinkNet with widths base·(1, 2, 4, 8); ``base=64`` is the paper's ResNet-18 encoder.

    Stem: conv 7x7 stride 2 → BN → ReLU → max-pool 3x3 stride 2 (the paper's, kept: at 96x128 the
    deepest map is still 3x4). Four encoder stages of two ResNet ``BasicBlock``s (``resnet.py``; 1/4,
    1/8, 1/16, 1/32 of the input). Four decoder blocks climb back to 1/4, each output added to the
    encoder map of its size; the last one, like encoder stage 1, keeps the resolution (stride 1), as
    in the authors' code. Head: transposed conv 3x3 stride 2 → conv 3x3 → transposed conv 2x2 stride 2
    to num_classes. Total stride 32.

    Convolutions followed by BatchNorm have no bias; the final transposed conv has one.
    With 32 classes and base 64: 11,537,312 parameters.
    """

    size_multiple = 32  # five stride-2 stages

    def __init__(self, num_classes, in_channels=3, base=64):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.stem = conv_bn_relu(in_channels, base, 7, stride=2, padding=3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.encoder = nn.ModuleList([resnet_stage(c_in, c_out, 2, 1 if c_in == c_out else 2, 1)
                                      for c_in, c_out in zip(widths[:1] + widths[:-1], widths)])
        # Deepest first: 8b → 4b, 4b → 2b, 2b → b (each up 2x), then b → b at 1/4 (stride 1).
        self.decoder = nn.ModuleList([decoder_block(c_in, c_out, 1 if c_in == c_out else 2)
                                      for c_in, c_out in zip(widths[::-1], widths[-2::-1] + widths[:1])])
        self.head = nn.Sequential(nn.ConvTranspose2d(base, base // 2, 3, stride=2, padding=1, output_padding=1,
                                                     bias=False),
                                  nn.BatchNorm2d(base // 2), nn.ReLU(),
                                  conv_bn_relu(base // 2, base // 2, 3, padding=1),
                                  nn.ConvTranspose2d(base // 2, num_classes, 2, stride=2))

    def forward(self, x):
        check_divisible(x, self.size_multiple, "PaperLinkNet")
        features = [self.pool(self.stem(x))]          # 1/4 resolution
        for stage in self.encoder:
            features.append(stage(features[-1]))      # 1/4, 1/8, 1/16, 1/32
        x = features.pop()
        for block, skip in zip(self.decoder, reversed(features)):
            x = block(x) + skip                       # the skip connection: addition
        return self.head(x)


# ---------------------------------------------------------------------------
# The segmentation_models version
# ---------------------------------------------------------------------------
def transposed_conv_bn_relu(in_channels, out_channels, use_norm=True):
    """smp's ``TransposeX2``: transposed conv 4x4 stride 2 padding 1 (exactly doubles H and W) → BN → ReLU.

    smp keeps the transposed conv's bias even before the BatchNorm; kept here so the state dicts match.
    """
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
                         nn.BatchNorm2d(out_channels) if use_norm else nn.Identity(), nn.ReLU())


class LinknetDecoderBlock(nn.Module):
    """1x1 conv (C → C/4), transposed conv ×2, 1x1 conv (C/4 → out), each + BN + ReLU; then + skip."""

    def __init__(self, in_channels, out_channels, use_norm=True):
        super().__init__()
        squeezed = in_channels // 4
        self.block = nn.Sequential(conv_bn_relu(in_channels, squeezed, 1, use_norm=use_norm),
                                   transposed_conv_bn_relu(squeezed, squeezed, use_norm),
                                   conv_bn_relu(squeezed, out_channels, 1, use_norm=use_norm))

    def forward(self, x, skip=None):
        x = self.block(x)
        return x if skip is None else x + skip  # the skip connection: addition


class LinknetDecoder(nn.Module):
    """One block per encoder stage, deepest first, each doubling the resolution; the last ends with
    ``prefinal_channels`` at the input's size (its "skip" would be the image, so it has none)."""

    def __init__(self, encoder_channels, prefinal_channels=32, use_norm=True):
        super().__init__()
        channels = list(encoder_channels[1:])[::-1] + [prefinal_channels]   # 512, 256, 128, 64, 64, 32
        self.blocks = nn.ModuleList([LinknetDecoderBlock(c_in, c_out, use_norm)
                                     for c_in, c_out in zip(channels, channels[1:])])

    def forward(self, features):
        x, *skips = features[1:][::-1]
        for index, block in enumerate(self.blocks):
            x = block(x, skips[index] if index < len(skips) else None)
        return x


class Linknet(SegmentationModel):
    """smp's ``Linknet``: a ResNet encoder, the decoder above and a 1x1 conv head; total stride 2**encoder_depth.

    With 32 classes: 11,664,800 parameters (resnet18), 21,772,960 (resnet34).
    """

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, encoder_depth=5, decoder_use_norm=True):
        super().__init__()
        self.encoder = make_encoder(encoder, in_channels, depth=encoder_depth)
        self.decoder = LinknetDecoder(self.encoder.out_channels, 32, decoder_use_norm)
        self.segmentation_head = SegmentationHead(32, num_classes, kernel_size=1)
        self.initialize()
