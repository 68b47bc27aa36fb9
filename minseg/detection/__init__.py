"""Instance segmentation's detector: find each object's box, then its mask (``minseg.detection``).

Semantic segmentation gives every pixel a class; instance segmentation also says *which* object a
pixel belongs to. The two-stage detectors taught here (Faster R-CNN, Mask R-CNN, and on them Panoptic
FPN and PANet) do it in steps, each a module of this package, read in this order:

- ``anchors``: the reference boxes (``AnchorGenerator``: several sizes and aspect ratios at every position of
  every FPN level) that the network's predictions are measured from.
- ``matcher``: which ground-truth box an anchor or proposal learns from (IoU thresholds), and a
  balanced sample of positives and negatives for the losses.
- ``rpn``: the region proposal network, a small convolution sliding over every FPN level that scores
  each anchor "object or not" and nudges it towards the object; the best few thousand boxes, after
  non-maximum suppression, are the proposals.
- ``poolers``: each proposal's features cut out of the level that suits its size and resampled to a fixed size
  (``MultiScaleRoIAlign``, RoIAlign per level), or from every level (PANet's adaptive feature pooling).
- ``box_head``: each proposal's features (RoIAlign'ed to a fixed size) through two fully connected
  layers to a class score and class-specific box refinements (Fast R-CNN).
- ``mask_head``: a small fully convolutional network on each detected box's features predicting an
  M × M mask per class (Mask R-CNN), and the pasting of those masks back into the image.
- ``roi_heads``: the second stage that runs both heads: matching proposals to ground truth, sampling,
  the box and mask losses in training, and the final detections at inference.

- ``panoptic``: Panoptic FPN's merge of instances and semantic stuff into one panoptic map.
- ``average_precision``, ``panoptic_quality``: COCO mask AP and PQ.

The losses are in ``minseg.functional.detection_loss``. Names, arguments and defaults are
torchvision.models.detection's, so a learner can read its source next to this one.
"""
from .anchors import AnchorGenerator  # noqa: F401
from .average_precision import MeanAveragePrecision, mask_iou  # noqa: F401
from .box_head import FastRCNNPredictor, TwoMLPHead, fastrcnn_loss  # noqa: F401
from .mask_head import *  # noqa: F401,F403
from .matcher import BalancedPositiveNegativeSampler, Matcher  # noqa: F401
from .panoptic import LABEL_DIVISOR, merge_panoptic, panoptic_from_target  # noqa: F401
from .panoptic_quality import PanopticQuality, panoptic_quality  # noqa: F401
from .poolers import LevelMapper, MultiScaleRoIAlign, roi_align_all_levels  # noqa: F401
from .roi_heads import RoIHeads  # noqa: F401
from .rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers  # noqa: F401
