"""DeepLab v2 (Chen et al. 2016, "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
Convolution, and Fully Connected CRFs", arXiv 1606.00915): atrous convolution, then a fully connected CRF.

A classification ResNet shrinks the image 32x, too coarse for per-pixel labels. DeepLab keeps the last two stages
at stride 8 by running them with dilated ("atrous") convolutions instead of strided ones (``resnet.py``'s
``output_stride=8``): the same weights, the same field of view, a 4x finer map. Its head, atrous spatial pyramid
pooling in the paper's v2 form (ASPP-L), looks at that map through four parallel 3x3 classifiers dilated at rates
6, 12, 18 and 24 (fields of view of 13 to 49 feature pixels, one object at several scales) and *sums* their class
scores; bilinear interpolation takes the sum back to the input's size. There is no decoder: the paper's answer to
blurry boundaries is the fully connected CRF run on the softmax afterwards (``minseg.crf``; ``Predictor(crf=...)``).

DeepLab v3 (``deeplab.py``) replaces the summed classifiers with concatenated 256-channel views, image pooling and
BatchNorm; smp has no v2, so the names here are this file's own: ``encoder`` (torchvision's, as every model here)
and ``classifier``.
"""
from .. import functional as F
from .. import nn
from .deeplab import AtrousConv2d
from .encoder_decoder import SegmentationModel, make_encoder
from .sizes import check_divisible

__all__ = ["DeepLabV2", "ASPPV2"]


class ASPPV2(nn.Module):
    """``sum_r conv3x3_rate_r(x)``: one 3x3 classifier (with a bias) per rate, each to ``num_classes`` scores.

    Each branch is an ``AtrousConv2d`` with 'same' padding, so on a map smaller than a rate it skips the taps that
    would read only padding (the result is the full dilated conv's).
    """

    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24)):
        super().__init__()
        self.rates = tuple(rates)
        if not self.rates or not all(isinstance(rate, int) and rate > 0 for rate in self.rates):
            raise ValueError(f"ASPPV2: rates must be positive ints, got {rates!r}")
        self.branches = nn.ModuleList([AtrousConv2d(in_channels, num_classes, 3, padding=rate, dilation=rate)
                                       for rate in self.rates])

    def forward(self, x):
        total = self.branches[0](x)
        for branch in self.branches[1:]:
            total = total + branch(x)
        return total


class DeepLabV2(SegmentationModel):
    """ResNet encoder at output stride 8, the v2 ASPP head (rates 6/12/18/24, scores summed), bilinear to the input.

    The paper's backbone is ResNet-101 (and VGG-16); minseg builds ResNet-18/34. With 32 classes: 11,766,464
    parameters (resnet18: 11,176,512 in the encoder, 4·(512·9·32 + 32) = 589,952 in the head), 21,874,624
    (resnet34). ``size_multiple`` is the encoder's output stride (8, or 16).
    """

    def __init__(self, num_classes, encoder="resnet34", in_channels=3, encoder_output_stride=8,
                 atrous_rates=(6, 12, 18, 24)):
        super().__init__()
        if encoder_output_stride not in (8, 16):
            raise ValueError(f"DeepLabV2: encoder_output_stride must be 8 or 16, got {encoder_output_stride!r}")
        self.encoder = make_encoder(encoder, in_channels, 5, encoder_output_stride)
        self.classifier = ASPPV2(self.encoder.out_channels[-1], num_classes, atrous_rates)

    def forward(self, x):
        check_divisible(x, self.size_multiple, f"DeepLabV2 with output stride {self.size_multiple}")
        scores = self.classifier(self.encoder(x)[-1])
        return F.interpolate(scores, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
