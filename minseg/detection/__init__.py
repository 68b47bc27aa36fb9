"""Instance segmentation's detection parts: anchors, RoI pooling from a feature pyramid, and the heads on them."""
from .anchors import AnchorGenerator  # noqa: F401
from .poolers import LevelMapper, MultiScaleRoIAlign, roi_align_all_levels  # noqa: F401
