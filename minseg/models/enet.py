"""ENet (Paszke, Chaurasia, Kim & Culurciello, "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", 2016): a segmentation network built to run in real time on small devices.

Its ideas, each one line of code below:

* Shrink early. The initial block halves the image with a strided 3×3 convolution concatenated with a max-pool
  of the input, and bottlenecks 1.0 and 2.0 halve it twice more: the sixteen bottlenecks of stages 2 and 3, the
  expensive layers, run at H/8 × W/8, 1/64 of the input's pixels.
* Work in bottlenecks (ResNet's): 1×1 projection to a quarter of the channels → the main convolution → 1×1
  expansion, added to a shortcut. The main convolution is a plain 3×3, a dilated 3×3 (rate 2, 4, 8, 16: a wide
  view at no extra cost) or an asymmetric 5×1 then 1×5 (a 5×5 view for the price of 10 weights, not 25).
* Downsample with both branches: the shortcut max-pools (keeping the indices) and pads the missing channels
  with zeros; the main branch's projection becomes a 2×2 convolution with stride 2.
* A large encoder and a small decoder. The decoder upsamples by unpooling with the encoder's indices (as SegNet
  does) on the shortcut and a transposed 3×3 convolution on the main branch; a final 2×2 transposed
  convolution produces the class scores at full resolution.
* PReLU (a ReLU whose negative slope is learned, one per channel) and spatial dropout (whole channels) in the
  encoder.

Details the paper leaves open follow the authors' Torch code: 1×1 convolutions without bias, 3×3 (and the
second asymmetric) convolutions with bias, BatchNorm with eps 1e-3, dropout 0.01 in the first five bottlenecks
and 0.1 after, and ReLU with no dropout in the decoder. The parameter count is in ``ENet``'s docstring.
"""
from .. import nn
from ..autograd import Tensor
from ..backend import get_array_module
from ..functional import max_pool2d, max_unpool2d
from ..ops import cat
from .sizes import check_divisible

__all__ = ["ENet", "InitialBlock", "Bottleneck", "DownsamplingBottleneck", "UpsamplingBottleneck"]

BN_EPS = 1e-3


def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=False):
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias),
            nn.BatchNorm2d(out_channels, eps=BN_EPS)]


def activation(channels, encoder):
    """PReLU with one slope per channel in the encoder, ReLU in the decoder (as in the authors' code)."""
    return nn.PReLU(channels) if encoder else nn.ReLU()


def main_convolution(channels, kind):
    """The bottleneck's middle convolution: "regular", "dilated <rate>" or "asymmetric <k>" (k×1 then 1×k)."""
    if kind == "regular":
        return [nn.Conv2d(channels, channels, 3, padding=1)]
    name, size = kind.split()
    if name == "dilated":
        return [nn.Conv2d(channels, channels, 3, padding=int(size), dilation=int(size))]
    k = int(size)
    return [nn.Conv2d(channels, channels, (k, 1), padding=(k // 2, 0), bias=False),
            nn.Conv2d(channels, channels, (1, k), padding=(0, k // 2))]


def zeros_like_channels(x, channels):
    """A constant block of zeros with x's batch, size, dtype and device and ``channels`` channels."""
    return Tensor(get_array_module(x.data).zeros((x.shape[0], channels) + x.shape[2:], x.dtype))


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------
class InitialBlock(nn.Module):
    """cat([conv 3×3 stride 2 to (out − in) channels, max-pool 2×2 of the input]) → BatchNorm → PReLU."""

    def __init__(self, in_channels=3, out_channels=16):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x):
        return self.prelu(self.bn(cat([self.conv(x), max_pool2d(x, 2)], dim=1)))


class Bottleneck(nn.Module):
    """act(x + dropout(BN(1×1 expand(act(BN(main(act(BN(1×1 project(x))))))))); the resolution is unchanged.

    ``kind``: "regular", "dilated 2" (4, 8, 16) or "asymmetric 5". ``encoder=False`` is the decoder's version:
    ReLU and no dropout.
    """

    def __init__(self, channels, kind="regular", dropout=0.1, encoder=True):
        super().__init__()
        internal = channels // 4
        self.main = nn.Sequential(*conv_bn(channels, internal, 1), activation(internal, encoder),
                                  *main_convolution(internal, kind), nn.BatchNorm2d(internal, eps=BN_EPS),
                                  activation(internal, encoder), *conv_bn(internal, channels, 1),
                                  *([nn.Dropout2d(dropout)] if encoder else []))
        self.activation = activation(channels, encoder)
        self.kind = kind

    def forward(self, x):
        return self.activation(x + self.main(x))

    def extra_repr(self):
        return repr(self.kind)


class DownsamplingBottleneck(nn.Module):
    """Halves the resolution: main branch with a 2×2 stride-2 projection; shortcut = max-pool + zero channels.

    Returns the output and the pooling indices, which the decoder's ``UpsamplingBottleneck`` unpools with.
    """

    def __init__(self, in_channels, out_channels, dropout):
        super().__init__()
        internal = out_channels // 4
        self.extra_channels = out_channels - in_channels
        self.main = nn.Sequential(*conv_bn(in_channels, internal, 2, stride=2), nn.PReLU(internal),
                                  nn.Conv2d(internal, internal, 3, padding=1), nn.BatchNorm2d(internal, eps=BN_EPS),
                                  nn.PReLU(internal), *conv_bn(internal, out_channels, 1), nn.Dropout2d(dropout))
        self.activation = nn.PReLU(out_channels)

    def forward(self, x):
        shortcut, indices = max_pool2d(x, 2, return_indices=True)
        shortcut = cat([shortcut, zeros_like_channels(shortcut, self.extra_channels)], dim=1)
        return self.activation(shortcut + self.main(x)), indices


class UpsamplingBottleneck(nn.Module):
    """Doubles the resolution: main branch with a 3×3 stride-2 transposed conv; shortcut = 1×1 conv + unpool."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        internal = out_channels // 4
        self.main = nn.Sequential(*conv_bn(in_channels, internal, 1), nn.ReLU(),
                                  nn.ConvTranspose2d(internal, internal, 3, stride=2, padding=1, output_padding=1),
                                  nn.BatchNorm2d(internal, eps=BN_EPS), nn.ReLU(), *conv_bn(internal, out_channels, 1))
        self.shortcut = nn.Sequential(*conv_bn(in_channels, out_channels, 1))
        self.activation = nn.ReLU()

    def forward(self, x, indices):
        shortcut = max_unpool2d(self.shortcut(x), indices, 2)
        return self.activation(shortcut + self.main(x))


# ---------------------------------------------------------------------------
# The network of the paper's table 1
# ---------------------------------------------------------------------------
STAGE_2 = ["regular", "dilated 2", "asymmetric 5", "dilated 4", "regular", "dilated 8", "asymmetric 5", "dilated 16"]


class ENet(nn.Module):
    """ENet as in the paper's table 1 (input 3 × H × W, total stride 8).

    ========================= ========== ==================
    stage                     type       output
    ========================= ========== ==================
    initial                              16 × H/2 × W/2
    bottleneck1.0             downsample 64 × H/4 × W/4
    4 × bottleneck1.x                    64 × H/4 × W/4
    bottleneck2.0             downsample 128 × H/8 × W/8
    bottleneck2.1 … 2.8       ``STAGE_2`` 128 × H/8 × W/8
    bottleneck3.1 … 3.8       ``STAGE_2`` 128 × H/8 × W/8
    bottleneck4.0             upsample   64 × H/4 × W/4
    2 × bottleneck4.x                    64 × H/4 × W/4
    bottleneck5.0             upsample   16 × H/2 × W/2
    bottleneck5.1                        16 × H/2 × W/2
    fullconv (2×2 transposed)            C × H × W
    ========================= ========== ==================

    With 3 input channels and 32 classes: 365,156 parameters, 2,080 of them in the final layer (16·4·C + C
    grows with the class count C: 363,856 for CamVid's 12 classes); ``tests/test_enet.py`` breaks the count
    down by stage. The paper says "0.37 M" without a breakdown. The difference (about 1%) is within what
    the text leaves open: which convolutions carry a bias, whether BatchNorm's scale and shift and PReLU's
    slopes were counted, and the class count it was counted with.
    """

    size_multiple = 8  # total stride 8

    def __init__(self, num_classes, in_channels=3):
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*[Bottleneck(64, dropout=0.01) for _ in range(4)])
        self.down2 = DownsamplingBottleneck(64, 128, dropout=0.1)
        self.stage2 = nn.Sequential(*[Bottleneck(128, kind, dropout=0.1) for kind in STAGE_2])
        self.stage3 = nn.Sequential(*[Bottleneck(128, kind, dropout=0.1) for kind in STAGE_2])
        self.up4 = UpsamplingBottleneck(128, 64)
        self.stage4 = nn.Sequential(*[Bottleneck(64, encoder=False) for _ in range(2)])
        self.up5 = UpsamplingBottleneck(64, 16)
        self.stage5 = Bottleneck(16, encoder=False)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2)

    def forward(self, x):
        check_divisible(x, self.size_multiple, "ENet")
        x, indices1 = self.down1(self.initial(x))
        x, indices2 = self.down2(self.stage1(x))
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, indices2))
        x = self.stage5(self.up5(x, indices1))
        return self.fullconv(x)
