"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", arXiv 2016, CVPR 2017): pyramid pooling.

A pixel's class often depends on the whole scene (a boat is on water, not on a road), more context than the
encoder's receptive field holds. The pyramid pooling module averages the deepest feature map over the whole image
and over 2x2, 3x3 and 6x6 grids of regions, squeezes each summary with a 1x1 conv, stretches it back to the map's
size and concatenates all four beside the map itself: every pixel then sees the global and regional context.

smp's version, kept here with its names and defaults: the encoder stops after its third stage (``encoder_depth=3``,
stride 8), one conv fuses the pyramid, and the head upsamples 8x. The whole ResNet is still built (its later stages
go unused), so an ImageNet checkpoint loads as for every other model.
"""
from .. import functional as F
from .. import nn
from ..ops import cat
from .encoder_decoder import SegmentationHead, SegmentationModel, conv_bn_relu, make_encoder

__all__ = ["PSPNet"]


class PSPBlock(nn.Module):
    """Average-pool to pool_size x pool_size regions, 1x1 conv + BN + ReLU, bilinear back to the input's size.

    The 1x1 level has no BatchNorm (its conv keeps a bias): one value per channel and image gives no spatial
    statistics, and PyTorch's BatchNorm refuses a batch of 1 there.
    """

    def __init__(self, in_channels, out_channels, pool_size, use_norm=True):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d((pool_size, pool_size)),
                                  conv_bn_relu(in_channels, out_channels, 1, use_norm=use_norm and pool_size > 1))

    def forward(self, x):
        return F.interpolate(self.pool(x), size=tuple(x.shape[2:]), mode="bilinear", align_corners=True)


class PSPModule(nn.Module):
    """The pyramid: one PSPBlock per grid size, each with in_channels / len(sizes) channels, then the map itself."""

    def __init__(self, in_channels, sizes=(1, 2, 3, 6), use_norm=True):
        super().__init__()
        self.blocks = nn.ModuleList([PSPBlock(in_channels, in_channels // len(sizes), size, use_norm)
                                     for size in sizes])

    def forward(self, x):
        return cat([block(x) for block in self.blocks] + [x], 1)


class PSPDecoder(nn.Module):
    """Pyramid pooling on the deepest feature (C → 2C channels), 1x1 conv + BN + ReLU to out_channels, Dropout2d."""

    def __init__(self, encoder_channels, use_norm=True, out_channels=512, dropout=0.2):
        super().__init__()
        self.psp = PSPModule(encoder_channels[-1], (1, 2, 3, 6), use_norm)
        self.conv = conv_bn_relu(2 * encoder_channels[-1], out_channels, 1, use_norm=use_norm)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, features):
        return self.dropout(self.conv(self.psp(features[-1])))


class PSPNet(SegmentationModel):
    """smp's ``PSPNet``: ResNet encoder to ``encoder_depth`` (3: stride 8), the decoder above, a 3x3 conv head
    upsampling by ``upsampling``. Height and width must be multiples of 2**encoder_depth.

    With 32 classes: 11,472,704 parameters (resnet18), 21,580,864 (resnet34).
    """

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, encoder_depth=3, psp_out_channels=512,
                 decoder_use_norm=True, psp_dropout=0.2, upsampling=8):
        super().__init__()
        self.encoder = make_encoder(encoder, in_channels, depth=encoder_depth)
        self.decoder = PSPDecoder(self.encoder.out_channels, decoder_use_norm, psp_out_channels, psp_dropout)
        self.segmentation_head = SegmentationHead(psp_out_channels, num_classes, kernel_size=3, upsampling=upsampling)
        self.initialize()
