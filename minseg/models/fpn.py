"""FPN (Lin et al. 2017, "Feature Pyramid Networks for Object Detection"; Kirillov et al. 2019, "Panoptic Feature
Pyramid Networks", for its segmentation head): a feature pyramid, each level upsampled and summed.

The encoder's deep maps know *what* is there, its shallow ones *where*. A top-down pathway gives every level both:
starting from the deepest map, each level is upsampled 2x and added to the next shallower encoder map (first brought
to the same channel count by a 1x1 conv, the "lateral" connection). Every pyramid level, from stride 32 to stride 4,
then goes through 3x3 conv + GroupNorm + ReLU blocks that upsample it to stride 4, the four results are summed, and
the head upsamples that 4x to the input.

GroupNorm normalizes over groups of channels within each image, so it works the same at any batch size.
Names and defaults are segmentation_models_pytorch 0.6.0's.
"""
from .. import functional as F
from .. import nn
from ..ops import cat
from .encoder_decoder import SegmentationHead, SegmentationModel, make_encoder

__all__ = ["FPN"]


class Conv3x3GNReLU(nn.Module):
    """conv 3x3 (no bias) → GroupNorm(32 groups) → ReLU, then bilinear 2x upsampling if ``upsample``."""

    def __init__(self, in_channels, out_channels, upsample=False):
        super().__init__()
        self.upsample = upsample
        self.block = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                                   nn.GroupNorm(32, out_channels), nn.ReLU())

    def forward(self, x):
        x = self.block(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True) if self.upsample else x


class FPNBlock(nn.Module):
    """One top-down step: the coarser level upsampled 2x (nearest) plus the lateral 1x1 conv of the encoder map."""

    def __init__(self, pyramid_channels, skip_channels, interpolation="nearest"):
        super().__init__()
        self.interpolation = interpolation
        self.skip_conv = nn.Conv2d(skip_channels, pyramid_channels, 1)

    def forward(self, x, skip):
        return F.interpolate(x, scale_factor=2.0, mode=self.interpolation) + self.skip_conv(skip)


class SegmentationBlock(nn.Module):
    """``n_upsamples`` Conv3x3GNReLU blocks that each double the size (one that does not, for n_upsamples=0)."""

    def __init__(self, in_channels, out_channels, n_upsamples=0):
        super().__init__()
        blocks = [Conv3x3GNReLU(in_channels, out_channels, upsample=n_upsamples > 0)]
        blocks += [Conv3x3GNReLU(out_channels, out_channels, upsample=True) for _ in range(1, n_upsamples)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x):
        return self.block(x)


class FPNDecoder(nn.Module):
    """Lateral + top-down pyramid P5 … P2 (strides 32 … 4), each brought to stride 4, merged, Dropout2d."""

    def __init__(self, encoder_channels, pyramid_channels=256, segmentation_channels=128, dropout=0.2,
                 merge_policy="add", interpolation="nearest"):
        super().__init__()
        if merge_policy not in ("add", "cat"):
            raise ValueError(f"FPN: decoder_merge_policy must be 'add' or 'cat', got {merge_policy!r}")
        self.merge_policy = merge_policy
        self.out_channels = segmentation_channels * (1 if merge_policy == "add" else 4)
        c5, c4, c3, c2 = encoder_channels[::-1][:4]
        self.p5 = nn.Conv2d(c5, pyramid_channels, 1)
        self.p4 = FPNBlock(pyramid_channels, c4, interpolation)
        self.p3 = FPNBlock(pyramid_channels, c3, interpolation)
        self.p2 = FPNBlock(pyramid_channels, c2, interpolation)
        self.seg_blocks = nn.ModuleList([SegmentationBlock(pyramid_channels, segmentation_channels, n_upsamples)
                                         for n_upsamples in (3, 2, 1, 0)])
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, features):
        c2, c3, c4, c5 = features[-4:]
        p5 = self.p5(c5)
        p4 = self.p4(p5, c4)
        p3 = self.p3(p4, c3)
        p2 = self.p2(p3, c2)
        levels = [block(p) for block, p in zip(self.seg_blocks, (p5, p4, p3, p2))]
        if self.merge_policy == "add":
            merged = levels[0] + levels[1] + levels[2] + levels[3]
        else:
            merged = cat(levels, 1)
        return self.dropout(merged)


class FPN(SegmentationModel):
    """smp's ``FPN``: ResNet encoder (stride 32), the decoder above, a 1x1 conv head upsampling 4x.

    With 32 classes: 13,051,232 parameters (resnet18), 23,159,392 (resnet34).
    """

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, decoder_pyramid_channels=256,
                 decoder_segmentation_channels=128, decoder_merge_policy="add", decoder_dropout=0.2,
                 decoder_interpolation="nearest", upsampling=4):
        super().__init__()
        self.encoder = make_encoder(encoder, in_channels)
        self.decoder = FPNDecoder(self.encoder.out_channels, decoder_pyramid_channels, decoder_segmentation_channels,
                                  decoder_dropout, decoder_merge_policy, decoder_interpolation)
        self.segmentation_head = SegmentationHead(self.decoder.out_channels, num_classes, kernel_size=1,
                                                  upsampling=upsampling)
        self.initialize()
