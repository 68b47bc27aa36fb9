"""Segmentation models, one file each, in the order the course contrasts them.

From scratch (the course's first models, small enough to train on a laptop CPU):

* ``Naive``: convolutions down, transposed convolutions up, no skip connections.
* ``PaperUNet``: skip connections by concatenation (like a DenseNet), as the 2015 UNet paper builds it.
* ``PaperLinkNet``: skip connections by addition (like a ResNet), as the 2017 LinkNet paper builds it.

On a ResNet-18/34 encoder (``resnet.py``), as segmentation_models_pytorch 0.6.0 builds them, with its state-dict
names and defaults (``encoder_decoder.py`` says what they share), so weights move between the two; ``Unet``,
``Linknet``, ``FPN`` and ``PSPNet`` also take DenseNet-121 (``densenet.py``) and Inception-v4 (``inception.py``):

* ``Unet`` and ``Linknet``: the same two ideas on a ResNet encoder.
* ``FPN``: a feature pyramid, each level upsampled and summed.
* ``PSPNet``: pyramid pooling.
* ``DeepLabV3``, ``DeepLabV3Plus``: atrous convolution and a wider field of view.
* ``DeepLabV2``: the paper's own head, four dilated classifiers summed (no smp twin; refine with ``minseg.crf``).

Instance and panoptic segmentation, on the detection FPN (``fpn_backbone.py``) and ``minseg.detection``'s
Mask R-CNN parts:

* ``PanopticFPN``: Mask R-CNN and the semantic FPN's head on one feature pyramid, merged into a panoptic map.
* ``PANet``: Panoptic FPN with PANet's bottom-up path, adaptive feature pooling and fused mask branch, each a flag.

``create("unet", num_classes=32)`` picks one by name, for examples and command lines; ``save_weights`` and
``load_weights`` (``weights.py``) move weights to and from ``.safetensors`` files.
"""
from .deeplab import DeepLabV3, DeepLabV3Plus
from .deeplabv2 import DeepLabV2
from .densenet import DenseNetEncoder
from .encoder_decoder import ENCODERS
from .enet import ENet
from .fcn import FCN8s, FCN16s, FCN32s
from .fpn import FPN
from .inception import InceptionV4Encoder
from .linknet import Linknet, PaperLinkNet
from .naive import Naive
from .panet import PANet
from .panoptic_fpn import PanopticFPN
from .pointrend import PointRend
from .pspnet import PSPNet
from .resnet import ResNetEncoder
from .segnet import SegNet, SegNetBasic
from .unet import PaperUNet, Unet
from .weights import LoadReport, compare_weights, load_weights, save_weights

__all__ = ["Naive", "PaperUNet", "PaperLinkNet", "Unet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus",
           "DeepLabV2",
           "FCN32s", "FCN16s", "FCN8s", "SegNetBasic", "SegNet", "ENet", "PointRend", "PanopticFPN", "PANet",
           "ResNetEncoder", "DenseNetEncoder", "InceptionV4Encoder", "ENCODERS", "MODELS", "ENCODER_MODELS",
           "INSTANCE_MODELS", "create",
           "save_weights", "load_weights", "compare_weights", "LoadReport"]

# Every name create() knows. Without an encoder, "unet" and "linknet" are the from-scratch paper models; the other
# encoder models default to smp's encoder, "resnet34".
MODELS = {"naive": Naive, "unet": PaperUNet, "linknet": PaperLinkNet, "fpn": FPN, "pspnet": PSPNet,
          "deeplabv3": DeepLabV3, "deeplabv3plus": DeepLabV3Plus,
          "deeplabv2": DeepLabV2,
          "fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "segnet_basic": SegNetBasic, "segnet": SegNet,
          "enet": ENet, "pointrend": PointRend}
# The models that take an encoder=... (one of ENCODERS; DeepLab and FCN only the ResNets).
ENCODER_MODELS = {"unet": Unet, "linknet": Linknet, "fpn": FPN, "pspnet": PSPNet,
                  "deeplabv3": DeepLabV3, "deeplabv3plus": DeepLabV3Plus,
                  "deeplabv2": DeepLabV2,
                  "fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "pointrend": PointRend}
# The instance and panoptic models: thing classes and stuff categories instead of num_classes, targets with boxes
# and masks, a dict of losses in training (minseg.detection). Kept apart from MODELS, the semantic command line's
# choices; their encoder is a detection encoder (fpn_backbone.DETECTION_ENCODERS), "resnet18" by default.
INSTANCE_MODELS = {"panoptic_fpn": PanopticFPN, "panet": PANet}


def create(name, num_classes, num_stuff=None, *, encoder=None, in_channels=3, **options):
    """Build the model called ``name`` (a key of ``MODELS`` or ``INSTANCE_MODELS``); ``options`` go to its constructor.

    ``encoder`` (one of ``ENCODERS``) picks the segmentation_models version of ``name`` on that encoder;
    ``create("unet", 32, encoder="resnet18")`` has exactly the state dict of
    ``smp.Unet("resnet18", classes=32)``. Without it, "unet" and "linknet" are the paper models (``PaperUNet``,
    ``PaperLinkNet``, with ``base`` channels) and the encoder-only models use smp's default encoder, "resnet34".

    The instance models take the thing classes as ``num_classes`` and the stuff categories as ``num_stuff``:
    ``create("panoptic_fpn", 3, 2, encoder="resnet_small")``, ``create("panet", 3, num_stuff=2,
    fused_mask=False)``. ``encoder`` is keyword-only, since the third place belongs to ``num_stuff``.
    """
    if name in INSTANCE_MODELS:
        if num_stuff is None:
            raise ValueError(f"create: model {name!r} needs num_stuff, the number of stuff categories; call "
                             f"create({name!r}, num_things, num_stuff)")
        if encoder is not None:
            options["encoder"] = encoder
        return INSTANCE_MODELS[name](num_classes, num_stuff, in_channels=in_channels, **options)
    if name not in MODELS:
        choices = ", ".join(repr(choice) for choice in (*MODELS, *INSTANCE_MODELS))
        raise ValueError(f"create: unknown model name {name!r}; choose one of {choices}")
    if num_stuff is not None:
        raise ValueError(f"create: num_stuff is for the panoptic models ({', '.join(map(repr, INSTANCE_MODELS))}), "
                         f"got num_stuff={num_stuff!r} for {name!r}; pass an encoder by name: encoder=...")
    if encoder is None:
        return MODELS[name](num_classes, in_channels=in_channels, **options)
    if name not in ENCODER_MODELS:
        choices = ", ".join(repr(choice) for choice in ENCODER_MODELS)
        raise ValueError(f"create: model {name!r} takes no encoder, got encoder={encoder!r}; the models with an "
                         f"encoder are {choices}")
    return ENCODER_MODELS[name](num_classes, encoder=encoder, in_channels=in_channels, **options)
