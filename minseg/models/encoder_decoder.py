"""What the segmentation_models family shares: a model is an encoder, a decoder and a segmentation head.

The encoder (``ResNetEncoder``, ``DenseNetEncoder`` or ``InceptionV4Encoder``) turns the image into feature maps
at strides 1, 2, 4, 8, 16 and 32; the decoder combines some of them into one map (how it does so is what
distinguishes UNet, LinkNet, FPN, PSPNet and DeepLab); the head maps that to one score per class and, where the
decoder stopped short of the input's resolution, upsamples bilinearly. The modules and their names follow
segmentation_models_pytorch (smp) 0.6.0, so its state dicts load here and these models compute what smp's do
(``benchmarks/smp_crosscheck.py`` compares them).
"""
from .. import nn
from ..nn import init
from .densenet import DenseNetEncoder
from .inception import InceptionV4Encoder
from .resnet import ResNetEncoder
from .sizes import check_divisible

__all__ = ["SegmentationModel", "SegmentationHead", "conv_bn_relu", "make_encoder", "initialize_decoder",
           "initialize_head", "ENCODERS", "DILATABLE_ENCODERS"]

# Every encoder name make_encoder knows, with its class; smp's names. Only the ResNets have a dilated mode
# (output_stride 8 or 16, DeepLab's); the others downsample by pooling.
ENCODER_CLASSES = {"resnet18": ResNetEncoder, "resnet34": ResNetEncoder, "densenet121": DenseNetEncoder,
                   "inceptionv4": InceptionV4Encoder}
ENCODERS = tuple(ENCODER_CLASSES)
DILATABLE_ENCODERS = ("resnet18", "resnet34")


def conv_bn_relu(in_channels, out_channels, kernel_size, stride=1, padding=0, use_norm=True):
    """smp's ``Conv2dReLU``: conv → BatchNorm → ReLU, or conv (with a bias) → ReLU when ``use_norm=False``.

    The conv has no bias before a BatchNorm, whose mean subtraction would cancel it. Without the norm smp keeps
    an ``Identity`` in its place, so the ReLU stays module 2 and the names match.
    """
    norm = nn.BatchNorm2d(out_channels) if use_norm else nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not use_norm),
                         norm, nn.ReLU())


class SegmentationHead(nn.Sequential):
    """conv (kernel_size, 'same' padding) to ``num_classes`` scores, then bilinear upsampling by ``upsampling``."""

    def __init__(self, in_channels, num_classes, kernel_size=3, upsampling=1):
        resize = (nn.Upsample(scale_factor=upsampling, mode="bilinear", align_corners=True) if upsampling > 1
                  else nn.Identity())
        super().__init__(nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2), resize)


def initialize_decoder(module):
    """smp's ``initialize_decoder``: each Conv2d in ``module`` Kaiming-uniform for ReLU, each norm layer 1 and 0.

    Kaiming for ReLU draws U(−√(6/fan_in), √(6/fan_in)), variance 2/fan_in, which keeps activations' scale through
    a ReLU (see ``nn.init.kaiming_uniform_``); conv biases start at 0. Transposed convolutions keep their default
    initialization, as in smp.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            init.kaiming_uniform_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)) and layer.weight is not None:
            init.ones_(layer.weight)
            init.zeros_(layer.bias)


def initialize_head(module):
    """smp's ``initialize_head``: each Conv2d Xavier-uniform, U(±√(6 / (fan_in + fan_out))), with a zero bias."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                init.zeros_(layer.bias)


def make_encoder(encoder, in_channels, depth=5, output_stride=32):
    """The encoder called ``encoder`` (one of ``ENCODERS``), as smp's ``get_encoder``."""
    if encoder not in ENCODER_CLASSES:
        raise ValueError(f"make_encoder: encoder must be one of {', '.join(map(repr, ENCODERS))}, got {encoder!r}")
    return ENCODER_CLASSES[encoder](encoder, in_channels=in_channels, output_stride=output_stride, depth=depth)


class SegmentationModel(nn.Module):
    """``segmentation_head(decoder(encoder(x)))``; subclasses build the three parts in ``__init__``.

    An input whose height or width is not a multiple of the encoder's output stride would come out of the decoder
    at a different size than it went in, so ``forward`` refuses it first (``requires_divisible_input``, as smp; a
    UNet, which resizes to each skip's size, takes any size).
    """

    requires_divisible_input = True

    @property
    def size_multiple(self):
        """The multiple of height and width the encoder's output stride asks for."""
        return self.encoder.output_stride

    def initialize(self):
        """Re-initialize the decoder and the head as smp does (its Unet, Linknet, FPN and PSPNet call this; its
        DeepLabV3 and DeepLabV3+ do not, and keep each layer's default). The encoder keeps torchvision's."""
        initialize_decoder(self.decoder)
        initialize_head(self.segmentation_head)

    def forward(self, x):
        if self.requires_divisible_input:
            check_divisible(x, self.size_multiple, f"{type(self).__name__} with output stride {self.size_multiple}")
        return self.segmentation_head(self.decoder(self.encoder(x)))
