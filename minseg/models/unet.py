"""UNet (Ronneberger et al. 2015): an encoder–decoder whose skip connections CONCATENATE.

The encoder saves its feature map at every resolution before pooling; the decoder
upsamples and concatenates the saved map of the same resolution along the channel
axis, so fine detail lost by pooling comes straight back (like a DenseNet, which also
joins features by concatenation rather than by addition as a ResNet does).
"""
from .. import nn
from ..ops import cat
from .sizes import check_divisible

__all__ = ["UNet"]


def double_conv(in_channels, out_channels):
    """Two [conv 3x3 pad 1 → BatchNorm → ReLU]; the resolution is unchanged."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU())


class UNet(nn.Module):
    """UNet with ``depth`` pooling steps; level i has base·2^i channels, the bottleneck base·2^depth.

    Every convolution keeps PyTorch's default bias, even where BatchNorm's mean
    subtraction makes it redundant, so the model matches the reference counts: with
    32 classes and depth 4, 7,767,008 parameters at base 32 and 1,944,576 at base 16.
    """

    def __init__(self, num_classes, in_channels=3, base=32, depth=4):
        super().__init__()
        widths = [base * 2 ** level for level in range(depth + 1)]  # 32, 64, 128, 256, 512
        self.depth = depth
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
        check_divisible(x, 2 ** self.depth, f"UNet with depth {self.depth}")
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, level, skip in zip(self.upsample, self.decoder, reversed(skips)):
            x = level(cat([skip, upsample(x)], dim=1))  # the skip connection: concatenation
        return self.head(x)

    def extra_repr(self):
        return f"depth={self.depth}"
