"""The differentiable operations of segmentation networks, PyTorch-style (``import minseg.functional as F``).

One module per concept; each defines ``__all__`` and is re-exported here.
"""
from ..ops import cat, log_softmax, relu, sigmoid, softmax, stack, tanh  # noqa: F401
from .activation import prelu  # noqa: F401
from .adaptive_pooling import *  # noqa: F401,F403
from .boxes import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .detection_loss import binary_cross_entropy_with_logits, l1_loss, smooth_l1_loss  # noqa: F401
from .dropout import *  # noqa: F401,F403
from .loss import cross_entropy, focal_loss  # noqa: F401
from .nms import batched_nms, nms  # noqa: F401
from .normalization import *  # noqa: F401,F403
from .one_hot import one_hot, to_class_ids  # noqa: F401
from .overlap_loss import dice_loss, jaccard_loss  # noqa: F401
from .point_sample import point_sample  # noqa: F401
from .pooling import *  # noqa: F401,F403
from .roi_align import roi_align  # noqa: F401
from .sync_batch_norm import sync_batch_norm  # noqa: F401
from .unpooling import *  # noqa: F401,F403
from .upsampling import *  # noqa: F401,F403
