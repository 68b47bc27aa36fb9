"""The box head (Girshick, Fast R-CNN 2015): classify each proposal and refine its box, one refinement per class.

Each proposal's features, RoIAlign'ed to C × 7 × 7 on its FPN level, are flattened and pass ``TwoMLPHead`` (two
fully connected layers with ReLU, 1024 wide in torchvision) and then ``FastRCNNPredictor``: num_classes scores
(background is class 0) and 4 · num_classes deltas, a box for every class, so a proposal that could be a cat or a
dog gets the box of each. ``fastrcnn_loss`` trains both: cross-entropy over the classes of the sampled proposals,
plus smooth L1 (beta 1/9) on the deltas of each positive proposal's *true* class against the encoded ground truth
(box coder weights 10, 10, 5, 5), summed and divided by the number of sampled proposals. torchvision's
``roi_heads.fastrcnn_loss`` and ``faster_rcnn.TwoMLPHead``/``FastRCNNPredictor`` are the reference; PANet swaps the
feature extractor for one fusing all levels, which is why ``RoIHeads`` takes it as an argument.
"""
import numpy as np

from .. import nn
from ..functional.detection_loss import smooth_l1_loss
from ..functional.loss import cross_entropy
from ..ops import relu

__all__ = ["TwoMLPHead", "FastRCNNPredictor", "fastrcnn_loss"]


def _flatten(x):
    """(K, ...) → (K, features); spelled out so that K = 0 (no RoIs) works too, where −1 cannot be inferred."""
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


class TwoMLPHead(nn.Module):
    """x (K, C, h, w) → flatten → fc6 → ReLU → fc7 → ReLU: (K, representation_size).

    in_channels is C·h·w, the flattened size of one RoI's pooled features (256·7·7 in torchvision).
    """

    def __init__(self, in_channels, representation_size):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x):
        return relu(self.fc7(relu(self.fc6(_flatten(x)))))


class FastRCNNPredictor(nn.Module):
    """x (K, in_channels) → (class_logits (K, num_classes), box_regression (K, 4·num_classes)).

    num_classes counts the background (class 0). The deltas of class c are columns 4c..4c+3.
    """

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x):
        x = _flatten(x)
        return self.cls_score(x), self.bbox_pred(x)


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets):
    """(loss_classifier, loss_box_reg) of the sampled proposals of all images; see the module docstring.

    class_logits (K, num_classes) and box_regression (K, 4·num_classes) are Tensors; labels (per-image int64
    arrays, 0 = background) and regression_targets (per-image (k_i, 4) arrays) are lists whose lengths sum to K.
    """
    labels = np.concatenate(labels).astype(np.int64)
    regression_targets = np.concatenate(regression_targets).astype(box_regression.dtype)
    classification_loss = cross_entropy(class_logits, labels)
    positive = np.nonzero(labels > 0)[0]
    per_class = box_regression.reshape(len(labels), -1, 4)
    box_loss = smooth_l1_loss(per_class[positive, labels[positive]], regression_targets[positive],
                              reduction="sum", beta=1 / 9) / max(len(labels), 1)
    return classification_loss, box_loss
