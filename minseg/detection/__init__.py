"""Instance and panoptic segmentation: detection pieces, the panoptic merge, and their metrics."""
from .anchors import AnchorGenerator
from .average_precision import MeanAveragePrecision, mask_iou
from .panoptic import LABEL_DIVISOR, merge_panoptic, panoptic_from_target
from .panoptic_quality import PanopticQuality, panoptic_quality
from .poolers import LevelMapper, MultiScaleRoIAlign, roi_align_all_levels

__all__ = ["AnchorGenerator", "LevelMapper", "MultiScaleRoIAlign", "roi_align_all_levels", "MeanAveragePrecision", "mask_iou", "LABEL_DIVISOR", "merge_panoptic", "panoptic_from_target",
           "PanopticQuality", "panoptic_quality"]
