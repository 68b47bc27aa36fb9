"""PointRend (Kirillov, Wu, He & Girshick, "PointRend: Image Segmentation as Rendering", CVPR 2020), for semantic
segmentation on top of an FPN.

A segmentation network predicts on a coarse grid (here stride 4) and bilinear upsampling blurs the boundaries,
where the labels change. A renderer faces the same problem and answers it by computing the image only where it is
needed: PointRend refines the prediction at a few POINTS, chosen where the coarse prediction is least sure, with a
small "point head" (an MLP shared by all points) that reads each point's coarse class scores and a fine-grained
feature vector, both sampled bilinearly at the point (``F.point_sample``).

* Training: oversample ``oversample × num_points`` random points, keep the ``importance`` share with the smallest
  gap between the top two coarse logits (the most uncertain), add uniform random points for the rest (so the head
  also sees easy points), and train the point head with cross-entropy at those points, next to the usual
  cross-entropy of the coarse prediction upsampled to the input (``PointRend.loss``).
* Inference: adaptive subdivision. Upsample the prediction ×2, recompute the point head at the
  ``subdivision_points`` most uncertain cells of the new grid, write those predictions in, and repeat until the
  input resolution is reached: only points near boundaries are ever computed at full resolution.

Details follow the authors' implementation (detectron2's PointRend project) where the paper leaves them open: the
coarse scores are concatenated to every layer of the point head, the fine-grained features are those of the
encoder at stride 4, and the point labels are the target's pixel under each point (nearest).
"""
from collections import namedtuple

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..backend import get_array_module
from ..functional import cross_entropy, interpolate, point_sample
from ..ops import cat
from ..random import generator
from .fpn import FPN
from .sizes import check_divisible

__all__ = ["PointRend", "PointHead", "uncertainty", "select_training_points", "uncertain_grid_points",
           "labels_at_points"]

PointPrediction = namedtuple("PointPrediction", ["output", "points", "logits"])


# ---------------------------------------------------------------------------
# Where to look: uncertainty and point selection
# ---------------------------------------------------------------------------
def uncertainty(logits):
    """−(top-1 logit − top-2 logit) along dim 1: 0 where two classes tie, very negative where one wins clearly."""
    xp = get_array_module(logits)
    top_two = xp.partition(logits, logits.shape[1] - 2, axis=1)[:, -2:]
    return top_two[:, 0] - top_two[:, 1]


def most_uncertain(points, logits_at_points, count):
    """The ``count`` points (N, count, 2) of ``points`` (N, S, 2) whose logits (N, C, S) have the smallest gap."""
    xp = get_array_module(points)
    order = xp.argsort(-uncertainty(logits_at_points), axis=1, kind="stable")[:, :count]
    return xp.take_along_axis(points, order[:, :, None], axis=1)


def select_training_points(coarse_logits, num_points, oversample=3, importance=0.75):
    """(N, num_points, 2) points in [0, 1]²: the most uncertain of oversampled random points, then uniform ones.

    ``oversample × num_points`` candidates are drawn uniformly; ``round(importance · num_points)`` of them with the
    smallest top-2 gap of the (bilinearly sampled) coarse logits are kept; the rest are fresh uniform points.
    Drawn from minseg's generator, so ``minseg.manual_seed`` makes them repeatable.
    """
    n = coarse_logits.shape[0]
    dtype = coarse_logits.dtype
    kept = int(round(importance * num_points))
    candidates = generator().random((n, oversample * num_points, 2)).astype(dtype)
    with no_grad():
        logits_at_candidates = point_sample(Tensor(coarse_logits), candidates).data
    uniform = generator().random((n, num_points - kept, 2)).astype(dtype)
    return np.concatenate([most_uncertain(candidates, logits_at_candidates, kept), uniform], axis=1)


def uncertain_grid_points(logits, count):
    """The ``count`` most uncertain cells of an (N, C, H, W) map: flat indices (N, count) and centres (N, count, 2).

    The centre of cell (i, j) is the point ((j + ½)/W, (i + ½)/H), where ``point_sample`` reads pixel (i, j) exactly.
    """
    xp = get_array_module(logits)
    n, _, h, w = logits.shape
    count = min(count, h * w)
    flat_uncertainty = uncertainty(logits).reshape(n, h * w)
    indices = xp.argsort(-flat_uncertainty, axis=1, kind="stable")[:, :count]
    centres = xp.stack([(indices % w + 0.5) / w, (indices // w + 0.5) / h], axis=2).astype(logits.dtype)
    return indices, centres


def labels_at_points(target, points):
    """Class ids (N, P) of the target pixel under each point: row ⌊y·H⌋, column ⌊x·W⌋ (clipped to the map)."""
    xp = get_array_module(target)
    n, h, w = target.shape
    rows = xp.clip(xp.floor(points[..., 1] * h).astype(np.int64), 0, h - 1)
    cols = xp.clip(xp.floor(points[..., 0] * w).astype(np.int64), 0, w - 1)
    return xp.take_along_axis(target.reshape(n, h * w), rows * w + cols, axis=1)


# ---------------------------------------------------------------------------
# The point head
# ---------------------------------------------------------------------------
class PointHead(nn.Module):
    """A shared MLP over points: ``num_fc`` layers of ``fc_dim`` units with ReLU, then class scores.

    Every layer reads [its input, the point's coarse scores]; the layers are 1×1 convolutions over an (N, C, P, 1)
    array, so the same weights apply to every point.
    """

    def __init__(self, fine_channels, num_classes, fc_dim=256, num_fc=3):
        super().__init__()
        widths = [fine_channels] + [fc_dim] * num_fc
        self.fc = nn.ModuleList([nn.Conv2d(c_in + num_classes, c_out, 1) for c_in, c_out in zip(widths, widths[1:])])
        self.predictor = nn.Conv2d(fc_dim + num_classes, num_classes, 1)

    def forward(self, fine, coarse):
        """fine (N, F, P) and coarse (N, C, P) point features → (N, C, P) point logits."""
        n, _, p = coarse.shape
        coarse = coarse.reshape(n, -1, p, 1)
        x = fine.reshape(n, -1, p, 1)
        for layer in self.fc:
            x = layer(cat([x, coarse], dim=1)).relu()
        return self.predictor(cat([x, coarse], dim=1)).reshape(n, -1, p)


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
class PointRend(nn.Module):
    """PointRend on an FPN (``coarse``, smp's FPN on ``encoder``), whose head predicts at stride 4.

    Fine-grained features: the encoder's stride-4 map (64 channels for ResNet-18/34). Training forward returns the
    coarse logits upsampled to the input (bilinear, align_corners=False) and keeps the points and their logits for
    ``loss``; evaluation forward returns the subdivided logits at the input resolution, computed without a graph.
    With ResNet-18 and 32 classes: 13,233,280 parameters (FPN 13,051,232 + point head 182,048).
    """

    size_multiple = 32  # the FPN's coarsest level has stride 32

    def __init__(self, num_classes, in_channels=3, encoder="resnet18", num_points=256, oversample=3, importance=0.75,
                 subdivision_points=1024, fc_dim=256, num_fc=3):
        super().__init__()
        self.coarse = FPN(num_classes, encoder=encoder, in_channels=in_channels)
        self.point_head = PointHead(self.coarse.encoder.out_channels[2], num_classes, fc_dim, num_fc)
        self.num_points, self.oversample, self.importance = num_points, oversample, importance
        self.subdivision_points = subdivision_points
        self.last_points = None  # the latest training forward's PointPrediction, for loss()

    def coarse_prediction(self, x):
        """The FPN's class scores at stride 4 (its head without the final upsampling) and the stride-4 features."""
        features = self.coarse.encoder(x)
        return self.coarse.segmentation_head[0](self.coarse.decoder(features)), features[2]

    def point_logits(self, coarse_logits, fine_features, points):
        return self.point_head(point_sample(fine_features, points), point_sample(coarse_logits, points))

    def forward(self, x):
        check_divisible(x, self.size_multiple, "PointRend on FPN")
        coarse_logits, fine_features = self.coarse_prediction(x)
        if not self.training:
            return self.subdivide(coarse_logits, fine_features, x.shape[2:])
        points = select_training_points(coarse_logits.data, self.num_points, self.oversample, self.importance)
        output = interpolate(coarse_logits, size=x.shape[2:], mode="bilinear", align_corners=False)
        self.last_points = PointPrediction(output, points, self.point_logits(coarse_logits, fine_features, points))
        return output

    def subdivide(self, coarse_logits, fine_features, size):
        """Upsample ×2 and re-predict the most uncertain cells, until the map has ``size``; no graph is recorded."""
        with no_grad():
            logits = coarse_logits
            while logits.shape[2] < size[0]:
                logits = interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
                indices, points = uncertain_grid_points(logits.data, self.subdivision_points)
                refined = self.point_logits(coarse_logits, fine_features, points).data
                n, c, h, w = logits.shape
                values = logits.data.reshape(n, c, h * w).copy()
                xp = get_array_module(values)
                xp.put_along_axis(values, xp.broadcast_to(indices[:, None, :], refined.shape), refined, axis=2)
                logits = Tensor(values.reshape(n, c, h, w))
        return logits

    def loss(self, output, target, ignore_index=-100):
        """Cross-entropy of ``output`` plus, after a training forward that returned it, the point cross-entropy.

        Pass ``model.loss`` where a loss function is expected (``Learner(..., loss_fn=model.loss)``); on the
        evaluation output it is plain cross-entropy.
        """
        loss = cross_entropy(output, target, ignore_index=ignore_index)
        last, self.last_points = self.last_points, None
        if last is None or last.output is not output:
            return loss
        target = target.data if isinstance(target, Tensor) else target
        point_targets = labels_at_points(target, last.points)
        return loss + cross_entropy(last.logits, Tensor(point_targets), ignore_index=ignore_index)

    def extra_repr(self):
        return (f"num_points={self.num_points}, oversample={self.oversample}, importance={self.importance}, "
                f"subdivision_points={self.subdivision_points}")
