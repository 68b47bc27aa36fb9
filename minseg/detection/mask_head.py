"""The mask head (He et al., Mask R-CNN 2017): an M × M mask per class for each box, and pasting it into the image.

Each positive proposal's features, RoIAlign'ed to C × 14 × 14, go through ``MaskRCNNHeads`` (four 3x3 convolutions
of 256 channels with ReLU; fewer and narrower for a small CPU model) and ``MaskRCNNPredictor`` (a 2x transposed
convolution, ReLU, and a 1x1 convolution to one logit map per class): (K, num_classes, 28, 28). Only the map of the
proposal's class is trained and used, so classes do not compete for a pixel; the classifier of the box head has
already decided the class. ``maskrcnn_loss`` is the binary cross-entropy of that map against the ground-truth
mask cropped to the proposal and resampled to M × M (``project_masks_on_boxes``, which is ``roi_align`` applied to
the image-sized mask). At inference ``paste_masks_in_image`` resizes each box's probabilities back to the box in the
image. torchvision.models.detection's ``roi_heads`` and ``mask_rcnn`` modules are the reference.
"""
import numpy as np

from .. import nn
from ..autograd import Tensor
from ..functional.detection_loss import binary_cross_entropy_with_logits
from ..functional.roi_align import roi_align

__all__ = ["MaskRCNNHeads", "MaskRCNNPredictor", "project_masks_on_boxes", "maskrcnn_loss", "maskrcnn_inference",
           "paste_masks_in_image"]


def _kaiming_normal_relu(module):
    """Every convolution's weight ~ N(0, 2 / fan_out), bias 0: Mask R-CNN's initialization of both modules."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)


# ---------------------------------------------------------------------------
# The modules
# ---------------------------------------------------------------------------
class MaskRCNNHeads(nn.Sequential):
    """conv3x3 + ReLU per entry of ``layers`` (its out_channels): (K, in_channels, M, M) → (K, layers[-1], M, M).

    torchvision's Mask R-CNN uses layers=(256, 256, 256, 256) and dilation=1.
    """

    def __init__(self, in_channels, layers=(256, 256, 256, 256), dilation=1):
        modules, channels = [], in_channels
        for out_channels in layers:
            modules += [nn.Conv2d(channels, out_channels, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            channels = out_channels
        super().__init__(*modules)
        _kaiming_normal_relu(self)


class MaskRCNNPredictor(nn.Module):
    """ConvTranspose2d(2, stride 2) + ReLU + Conv2d 1x1: (K, in_channels, M, M) → (K, num_classes, 2M, 2M) logits."""

    def __init__(self, in_channels, dim_reduced, num_classes):
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2)
        self.relu = nn.ReLU()
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1)
        _kaiming_normal_relu(self)

    def forward(self, x):
        return self.mask_fcn_logits(self.relu(self.conv5_mask(x)))


# ---------------------------------------------------------------------------
# Training: targets and loss
# ---------------------------------------------------------------------------
def project_masks_on_boxes(gt_masks, boxes, matched_idxs, M):
    """Each box's ground-truth mask, cropped to the box and resampled to M × M: float32 (K, M, M) in [0, 1].

    gt_masks (G, H, W) 0/1, boxes (K, 4) in image coordinates, matched_idxs (K,) the mask each box learns from.
    The masks are the "images" of a ``roi_align`` (spatial_scale 1, aligned=False, as torchvision) whose RoIs
    start with the matched index, so no mask is copied per box.
    """
    masks = Tensor(np.asarray(gt_masks, np.float32)[:, None])
    rois = np.concatenate([np.asarray(matched_idxs, np.float32)[:, None], np.asarray(boxes, np.float32)], axis=1)
    return roi_align(masks, rois, (M, M), 1.0).data[:, 0]


def maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, mask_matched_idxs):
    """loss_mask: the mean binary cross-entropy of each positive proposal's true-class logit map against its target.

    mask_logits (K, num_classes, M, M) Tensor over the positive proposals of all images; proposals, gt_masks
    (G_i, H, W), gt_labels (G_i,) and mask_matched_idxs are per-image lists. No positive proposal: 0, with a
    zero gradient reaching the logits.
    """
    M = mask_logits.shape[-1]
    labels = np.concatenate([np.asarray(lab, np.int64)[np.asarray(idx, np.int64)]
                             for lab, idx in zip(gt_labels, mask_matched_idxs)])
    if len(labels) == 0:
        return mask_logits.sum() * 0
    targets = [project_masks_on_boxes(m, p, i, M) for m, p, i in zip(gt_masks, proposals, mask_matched_idxs)
               if len(i)]
    chosen = mask_logits[np.arange(len(labels)), labels]
    return binary_cross_entropy_with_logits(chosen, np.concatenate(targets).astype(mask_logits.dtype))


# ---------------------------------------------------------------------------
# Inference: probabilities of the predicted class, pasted into the image
# ---------------------------------------------------------------------------
def maskrcnn_inference(mask_logits, labels):
    """σ of each box's predicted-class logit map: per-image float32 arrays (k_i, 1, M, M); labels is per image."""
    logits = mask_logits.numpy() if isinstance(mask_logits, Tensor) else np.asarray(mask_logits)
    all_labels = np.concatenate(labels).astype(np.int64) if len(labels) else np.zeros(0, np.int64)
    chosen = logits[np.arange(len(all_labels)), all_labels][:, None].astype(np.float64)
    probabilities = (1 / (1 + np.exp(-chosen))).astype(np.float32)
    return np.split(probabilities, np.cumsum([len(lab) for lab in labels])[:-1])


def _interpolation_matrix(start, stop, M, pixels):
    """(len(pixels), M + 2) bilinear weights that read pixel centres in [start, stop] off a zero-bordered M-row mask.

    Pixel centre p + 0.5 lies at mask coordinate u = (p + 0.5 − start) / (stop − start) · M − 0.5 (align_corners=
    False: the mask's M cells tile the box); the border of zeros around the mask (index u + 1) lets the mask fade
    out over one mask cell beyond the box, and farther pixels read 0.
    """
    u = (pixels + 0.5 - start) / max(stop - start, 1e-6) * M - 0.5 + 1
    u = np.clip(u, 0, M + 1)
    low = np.minimum(np.floor(u).astype(np.int64), M)
    fraction = u - low
    matrix = np.zeros((len(pixels), M + 2))
    rows = np.arange(len(pixels))
    matrix[rows, low] = 1 - fraction
    matrix[rows, low + 1] += fraction
    return matrix


def _pixels_near(start, stop, cells, size):
    """The pixels 0..size-1 whose centres lie within one mask cell of [start, stop]; farther ones read only zeros."""
    margin = (stop - start) / cells
    return np.arange(max(int(np.floor(start - margin)), 0), min(int(np.ceil(stop + margin)), size))


def paste_masks_in_image(masks, boxes, img_shape, padding=1):
    """Each box's M × M probabilities resized (bilinear) into its box in an (H, W) image: float32 (K, H, W).

    masks (K, 1, M, M) or (K, M, M), boxes (K, 4), img_shape (H, W). As torchvision's ``paste_masks_in_image``,
    the mask gets ``padding`` cells of zeros around it (1; only 1 is supported) so its values fade to 0 just past
    the box edge, and is resized with align_corners=False; unlike it, the box is not rounded to whole pixels.
    """
    if padding != 1:
        raise NotImplementedError(f"paste_masks_in_image: padding={padding!r} is not supported; minseg pastes with "
                                  f"padding=1 only")
    masks = np.asarray(masks, np.float64)
    masks = masks.reshape(masks.shape[0], masks.shape[-2], masks.shape[-1])
    height, width = img_shape
    pasted = np.zeros((len(masks), height, width), np.float32)
    for k, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks, np.asarray(boxes, np.float64).reshape(-1, 4))):
        m_rows, m_cols = mask.shape
        rows, cols = _pixels_near(y1, y2, m_rows, height), _pixels_near(x1, x2, m_cols, width)
        if len(rows) == 0 or len(cols) == 0:
            continue
        bordered = np.pad(mask, 1)
        window = _interpolation_matrix(y1, y2, m_rows, rows) @ bordered @ _interpolation_matrix(x1, x2, m_cols, cols).T
        pasted[k, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = window
    return pasted
