"""The differentiable operations of segmentation networks, PyTorch-style (``import minseg.functional as F``).

One module per concept; each defines ``__all__`` and is re-exported here.
"""
from ..ops import cat, stack, relu, sigmoid, tanh, softmax, log_softmax  # noqa: F401
from .one_hot import one_hot, to_class_ids  # noqa: F401
from .loss import cross_entropy, focal_loss, dice_loss, jaccard_loss  # noqa: F401
from .pooling import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .upsampling import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
