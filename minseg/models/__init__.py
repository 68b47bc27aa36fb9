"""Segmentation models, one file each, in the order the course contrasts them.

* ``Naive``: convolutions down, transposed convolutions up, no skip connections.
* ``UNet``: skip connections by concatenation (like a DenseNet).
* ``LinkNet``: skip connections by addition (like a ResNet).

``create("unet", num_classes=32)`` picks one by name, for examples and command lines.
"""
from .naive import Naive
from .unet import UNet
from .linknet import LinkNet

__all__ = ["Naive", "UNet", "LinkNet", "MODELS", "create"]

MODELS = {"naive": Naive, "unet": UNet, "linknet": LinkNet}


def create(name, num_classes, in_channels=3, **kwargs):
    """Build the model called ``name`` ('naive', 'unet' or 'linknet'); kwargs go to its constructor."""
    if name not in MODELS:
        choices = ", ".join(repr(choice) for choice in MODELS)
        raise ValueError(f"create: unknown model name {name!r}; choose one of {choices}")
    return MODELS[name](num_classes, in_channels=in_channels, **kwargs)
