"""LinkNet (Chaurasia & Culurciello 2017): a ResNet-18 encoder whose skip connections ADD.

Each decoder block's output is added to the encoder feature map of the same size, as a
ResNet adds a block's input to its output. Addition (unlike UNet's concatenation) keeps
the channel count, so the decoder stays light: LinkNet spends most of its parameters
in the encoder and runs faster than a UNet of similar accuracy.
"""
from .. import nn
from ..ops import relu
from .sizes import check_divisible

__all__ = ["LinkNet"]


def conv_bn_relu(in_channels, out_channels, kernel_size, stride=1, padding=0):
    # No bias: the BatchNorm that follows subtracts the mean, which would cancel it (as in ResNet).
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class BasicBlock(nn.Module):
    """ResNet's basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).

    The shortcut is the identity, or a strided 1x1 conv + BatchNorm where the block
    changes the resolution or the channel count (so the two terms can be added).
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        residual = self.bn2(self.conv2(relu(self.bn1(self.conv1(x)))))
        return relu(residual + self.shortcut(x))


def encoder_stage(in_channels, out_channels, stride):
    """Two basic blocks; the first one may halve the resolution."""
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels))


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


class LinkNet(nn.Module):
    """LinkNet with widths base·(1, 2, 4, 8); ``base=64`` is the paper's ResNet-18 encoder.

    Stem: conv 7x7 stride 2 → BN → ReLU → max-pool 3x3 stride 2 (the paper's, kept: at
    96x128 the deepest map is still 3x4). Four encoder stages (1/4, 1/8, 1/16, 1/32 of the
    input). Four decoder blocks climb back to 1/4, each output added to the encoder map of
    its size; the last one, like encoder stage 1, keeps the resolution (stride 1), as in
    the authors' code. Head: transposed conv 3x3 stride 2 → conv 3x3 → transposed conv
    2x2 stride 2 to num_classes. Total stride 32.

    Convolutions followed by BatchNorm have no bias; the final transposed conv has one.
    With 32 classes and base 64: 11,537,312 parameters.
    """

    def __init__(self, num_classes, in_channels=3, base=64):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.stem = conv_bn_relu(in_channels, base, 7, stride=2, padding=3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.encoder = nn.ModuleList([encoder_stage(c_in, c_out, 1 if c_in == c_out else 2)
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
        check_divisible(x, 32, "LinkNet")
        features = [self.pool(self.stem(x))]          # 1/4 resolution
        for stage in self.encoder:
            features.append(stage(features[-1]))      # 1/4, 1/8, 1/16, 1/32
        x = features.pop()
        for block, skip in zip(self.decoder, reversed(features)):
            x = block(x) + skip                       # the skip connection: addition
        return self.head(x)
