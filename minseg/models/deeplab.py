"""DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation") and DeepLabV3+
(Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation"): atrous
convolution and a wider field of view.

A dilated ("atrous", with holes) 3x3 convolution at rate r reads the 3x3 pixels r apart: the same nine weights cover
a (2r+1)x(2r+1) window. DeepLab uses it twice. The encoder's last stages run dilated instead of strided
(``output_stride`` 8 or 16, see ``resnet.py``), so the deepest map stays fine without losing field of view. Then
atrous spatial pyramid pooling (ASPP) looks at that map through a 1x1 conv, three 3x3 convs at rates 12, 24 and 36,
and the image-wide average, side by side, and a 1x1 conv fuses the five views: context at several scales at once.

DeepLabV3 upsamples the fused map straight to the input. DeepLabV3+ adds a decoder: it upsamples 4x, concatenates
the encoder's stride-4 feature (squeezed to 48 channels) for sharper boundaries, and uses depthwise separable
convolutions (a per-channel 3x3 conv, then a 1x1 across channels: far fewer weights than a full 3x3).
Names and defaults are segmentation_models_pytorch 0.6.0's.
"""
from .. import functional as F
from .. import nn
from ..ops import cat
from .encoder_decoder import DILATABLE_ENCODERS, ENCODERS, SegmentationHead, SegmentationModel, make_encoder

__all__ = ["DeepLabV3", "DeepLabV3Plus", "ASPP", "SeparableConv2d", "AtrousConv2d"]


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------
class AtrousConv2d(nn.Conv2d):
    """A stride-1 dilated conv with 'same' padding, dilation·(k // 2), that skips the taps reading only padding.

    Tap j steps from the kernel's centre reads the pixels j·rate away. Where j·rate ≥ the map's height (or width),
    every one of them is zero padding, so dropping those taps, and the padding only they needed, changes no output
    value (nor any gradient: the dropped weights' gradient is zero). ASPP meets this at its rates 12, 24 and 36
    on the small maps of a stride-8 or -16 encoder; on a 6x8 map the rate-24 and rate-36 convs are 1x1 convs of
    their centre weights, with no padding to copy. The weight stays kxk, as in the state dict.
    """

    def forward(self, x):
        centre = [k // 2 for k in self.kernel_size]
        reach = [min(c, (size - 1) // rate) for c, size, rate in zip(centre, x.shape[2:], self.dilation)]
        if reach == centre:
            return super().forward(x)
        weight = self.weight[:, :, centre[0] - reach[0]:centre[0] + reach[0] + 1,
                             centre[1] - reach[1]:centre[1] + reach[1] + 1]
        padding = tuple(r * rate for r, rate in zip(reach, self.dilation))
        return F.conv2d(x, weight, self.bias, 1, padding, self.dilation, groups=self.groups)


class SeparableConv2d(nn.Sequential):
    """Depthwise conv (groups=in_channels: each channel its own kxk filter), then a 1x1 conv mixing channels.

    Weights: in·k² + in·out instead of a full conv's in·out·k².
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 depthwise=nn.Conv2d):
        super().__init__(depthwise(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, groups=in_channels, bias=False),
                         nn.Conv2d(in_channels, out_channels, 1, bias=bias))


def conv_bn_relu_rate(in_channels, out_channels, kernel_size, dilation=1, separable=False):
    """(Separable) conv with 'same' padding at ``dilation`` → BatchNorm → ReLU, no conv bias."""
    padding = dilation * (kernel_size // 2)
    conv = (SeparableConv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False,
                            depthwise=AtrousConv2d)
            if separable else
            AtrousConv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPPPooling(nn.Sequential):
    """The image-level view: global average → 1x1 conv + BN + ReLU → stretched back to the map's size."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x):
        return F.interpolate(super().forward(x), size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Five views of one map (1x1 conv; 3x3 at each of ``atrous_rates``; image pooling), concatenated, then a
    1x1 conv + BN + ReLU + Dropout fuses them to ``out_channels``."""

    def __init__(self, in_channels, out_channels, atrous_rates=(12, 24, 36), separable=False, dropout=0.5):
        super().__init__()
        rates = tuple(atrous_rates)
        if len(rates) != 3:
            raise ValueError(f"ASPP: atrous_rates must be three dilation rates, got {atrous_rates!r}")
        self.convs = nn.ModuleList([conv_bn_relu_rate(in_channels, out_channels, 1)]
                                   + [conv_bn_relu_rate(in_channels, out_channels, 3, rate, separable)
                                      for rate in rates]
                                   + [ASPPPooling(in_channels, out_channels)])
        self.project = nn.Sequential(nn.Conv2d(5 * out_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x):
        return self.project(cat([conv(x) for conv in self.convs], 1))


def check_output_stride(model, output_stride, encoder):
    if output_stride not in (8, 16):
        raise ValueError(f"{model}: encoder_output_stride must be 8 or 16, got {output_stride!r}")
    if encoder in ENCODERS and encoder not in DILATABLE_ENCODERS:
        raise ValueError(f"{model}: encoder must have a dilated mode (output stride {output_stride}), got {encoder!r}, "
                         f"which downsamples by pooling; use one of {', '.join(map(repr, DILATABLE_ENCODERS))}")


# ---------------------------------------------------------------------------
# DeepLabV3
# ---------------------------------------------------------------------------
class DeepLabV3Decoder(nn.Module):
    """ASPP on the deepest feature, then conv 3x3 + BN + ReLU."""

    def __init__(self, in_channels, out_channels, atrous_rates, aspp_separable, aspp_dropout):
        super().__init__()
        self.aspp = ASPP(in_channels, out_channels, atrous_rates, aspp_separable, aspp_dropout)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, features):
        return self.relu(self.bn(self.conv(self.aspp(features[-1]))))


class DeepLabV3(SegmentationModel):
    """smp's ``DeepLabV3``: dilated ResNet (output stride 8 by default), ASPP decoder, 1x1 head upsampling back.

    With 32 classes: 15,906,912 parameters (resnet18), 26,015,072 (resnet34).
    """

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, encoder_depth=5, encoder_output_stride=8,
                 decoder_channels=256, decoder_atrous_rates=(12, 24, 36), decoder_aspp_separable=False,
                 decoder_aspp_dropout=0.5, upsampling=None):
        super().__init__()
        check_output_stride("DeepLabV3", encoder_output_stride, encoder)
        self.encoder = make_encoder(encoder, in_channels, encoder_depth, encoder_output_stride)
        if upsampling is None:  # back to the input: the deepest feature's stride
            upsampling = self.encoder.output_stride
        self.decoder = DeepLabV3Decoder(self.encoder.out_channels[-1], decoder_channels, decoder_atrous_rates,
                                        decoder_aspp_separable, decoder_aspp_dropout)
        self.segmentation_head = SegmentationHead(decoder_channels, num_classes, kernel_size=1, upsampling=upsampling)


# ---------------------------------------------------------------------------
# DeepLabV3+
# ---------------------------------------------------------------------------
class DeepLabV3PlusDecoder(nn.Module):
    """ASPP + separable conv on the deepest feature, upsampled to stride 4 and joined with the stride-4 feature."""

    def __init__(self, encoder_channels, encoder_depth, out_channels, atrous_rates, output_stride, aspp_separable,
                 aspp_dropout, highres_channels=48):
        super().__init__()
        if encoder_depth < 3:
            raise ValueError(f"DeepLabV3Plus: encoder_depth must be 3, 4 or 5, got {encoder_depth!r}")
        self.aspp = nn.Sequential(ASPP(encoder_channels[-1], out_channels, atrous_rates, aspp_separable,
                                       aspp_dropout),
                                  SeparableConv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU())
        # From the deepest stride to stride 4: 16 → 4 needs 4x; 8 → 4 (or depth 3, already at 8) needs 2x.
        scale = 4 if output_stride == 16 and encoder_depth > 3 else 2
        self.up = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=True)
        self.block1 = nn.Sequential(nn.Conv2d(encoder_channels[2], highres_channels, 1, bias=False),
                                    nn.BatchNorm2d(highres_channels), nn.ReLU())
        self.block2 = nn.Sequential(SeparableConv2d(highres_channels + out_channels, out_channels, 3, padding=1,
                                                    bias=False),
                                    nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, features):
        deep = self.up(self.aspp(features[-1]))
        return self.block2(cat([deep, self.block1(features[2])], 1))


class DeepLabV3Plus(SegmentationModel):
    """smp's ``DeepLabV3Plus``: dilated ResNet (output stride 16), separable ASPP, the decoder above, 1x1 head ×4.

    With 32 classes: 12,337,264 parameters (resnet18), 22,445,424 (resnet34).
    """

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, encoder_depth=5, encoder_output_stride=16,
                 decoder_channels=256, decoder_atrous_rates=(12, 24, 36), decoder_aspp_separable=True,
                 decoder_aspp_dropout=0.5, upsampling=4):
        super().__init__()
        check_output_stride("DeepLabV3Plus", encoder_output_stride, encoder)
        self.encoder = make_encoder(encoder, in_channels, encoder_depth, encoder_output_stride)
        self.decoder = DeepLabV3PlusDecoder(self.encoder.out_channels, encoder_depth, decoder_channels,
                                            decoder_atrous_rates, encoder_output_stride, decoder_aspp_separable,
                                            decoder_aspp_dropout)
        self.segmentation_head = SegmentationHead(decoder_channels, num_classes, kernel_size=1, upsampling=upsampling)
