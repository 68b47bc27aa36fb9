"""The naive encoder–decoder: convolutions down, transposed convolutions up, no skips.

Each stride-2 convolution halves the height and width and the matching stride-2
transposed convolution doubles them again. Everything the decoder knows about *where*
things are must squeeze through the smallest feature map (1/16 of the input), which is
why its masks come out blurry — the problem UNet's and LinkNet's skip connections solve.
"""
from .. import nn
from .sizes import check_divisible

__all__ = ["Naive"]


def down(in_channels, out_channels):
    """Halve the resolution: conv 3x3 stride 2 → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


def up(in_channels, out_channels):
    """Double the resolution: transposed conv 2x2 stride 2 → BatchNorm → ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class Naive(nn.Module):
    """Encoder–decoder without skip connections.

    With the default widths (32, 64, 128, 256) the channels go
    in_channels → 32 → 64 → 128 → 256 (1/16 resolution) → 128 → 64 → 32 → 32 → num_classes.
    Every convolution has a bias (PyTorch's default); with 32 classes the model has
    567,328 parameters.
    """

    def __init__(self, num_classes, in_channels=3, widths=(32, 64, 128, 256)):
        super().__init__()
        widths = tuple(widths)
        self.levels = len(widths)
        self.size_multiple = 2 ** self.levels  # each level halves the resolution
        self.encoder = nn.Sequential(*[down(c_in, c_out) for c_in, c_out in zip((in_channels,) + widths, widths)])
        # Up: each transposed conv undoes one down step; the last keeps widths[0] channels.
        up_widths = widths[::-1] + widths[:1]
        self.decoder = nn.Sequential(*[up(c_in, c_out) for c_in, c_out in zip(up_widths, up_widths[1:])])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        check_divisible(x, self.size_multiple, f"Naive with {self.levels} stride-2 levels")
        return self.head(self.decoder(self.encoder(x)))
