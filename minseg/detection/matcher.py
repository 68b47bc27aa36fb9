"""Which ground-truth box each anchor or proposal learns from, and which of them a loss looks at.

``Matcher`` reads an IoU matrix (ground truth × predictions) and gives each prediction the index of
its best ground truth, or a negative code when that IoU is too low to call it a match:
``BELOW_LOW_THRESHOLD`` (-1, background) or ``BETWEEN_THRESHOLDS`` (-2, ambiguous, ignored). An image
has far more background anchors than object anchors, so a loss over all of them would learn to say
"background" everywhere; ``BalancedPositiveNegativeSampler`` draws a fixed number per image with at
most a given fraction of positives. Both follow torchvision.models.detection._utils: the RPN uses
Matcher(0.7, 0.3, allow_low_quality_matches=True) and a 256-anchor, half-positive sampler; the box
head Matcher(0.5, 0.5) and 512 RoIs a quarter positive. Everything here is NumPy: matching and
sampling choose which elements a loss sees and are not differentiated.
"""
import numpy as np

from .. import random

__all__ = ["Matcher", "BalancedPositiveNegativeSampler"]


class Matcher:
    """Assign each prediction (column of an IoU matrix) to a ground-truth box (row), or a negative code.

    high_threshold:  IoU ≥ high is a match (the ground truth's index, 0, 1, ...).
    low_threshold:   IoU < low is BELOW_LOW_THRESHOLD (-1); low ≤ IoU < high is BETWEEN_THRESHOLDS (-2).
    allow_low_quality_matches: also match, for each ground truth, the predictions with its highest IoU
        even below high_threshold, so no object is left without an anchor (Faster R-CNN's RPN rule).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
        if not 0 <= low_threshold <= high_threshold:
            raise ValueError(f"Matcher: low_threshold must be between 0 and high_threshold, got "
                             f"low_threshold={low_threshold} and high_threshold={high_threshold}")
        self.high_threshold, self.low_threshold = float(high_threshold), float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, match_quality_matrix):
        """int64 (N,) for a (M ground truths, N predictions) IoU matrix; all -1 when M = 0 (nothing to match)."""
        quality = np.asarray(match_quality_matrix)
        if quality.ndim != 2:
            raise ValueError(f"Matcher: match_quality_matrix must be 2-D (ground truths, predictions), "
                             f"got shape {quality.shape}")
        if quality.shape[0] == 0:
            return np.full(quality.shape[1], self.BELOW_LOW_THRESHOLD, np.int64)
        matched_values = quality.max(axis=0)
        matches = quality.argmax(axis=0).astype(np.int64)
        best_matches = matches.copy()
        matches[matched_values < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (matched_values >= self.low_threshold) & (matched_values < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            self._restore_best_predictions(matches, best_matches, quality)
        return matches

    @staticmethod
    def _restore_best_predictions(matches, best_matches, quality):
        """Give back their best match to the predictions that are some ground truth's best (ties included).

        As torchvision, a prediction keeps the ground truth it overlaps most, which need not be the one
        it is best for; and a ground truth overlapping nothing (highest IoU 0) restores every prediction
        that overlaps it by 0 to its own best match.
        """
        highest_per_ground_truth = quality.max(axis=1, keepdims=True)
        predictions = np.nonzero(quality == highest_per_ground_truth)[1]
        matches[predictions] = best_matches[predictions]


class BalancedPositiveNegativeSampler:
    """Per image, at most batch_size_per_image elements, of which at most positive_fraction positive.

    Called on a list of per-image label arrays (1 or more: positive, 0: negative, -1: ignored), it
    returns two lists of boolean masks (positives, negatives) of the same shapes. Negatives fill the
    places positives leave free. The draw uses ``minseg.random``'s generator, so ``minseg.manual_seed``
    makes it repeatable.
    """

    def __init__(self, batch_size_per_image, positive_fraction):
        if isinstance(batch_size_per_image, bool) or not isinstance(batch_size_per_image, (int, np.integer)) \
                or batch_size_per_image < 1:
            raise ValueError(f"BalancedPositiveNegativeSampler: batch_size_per_image must be a positive integer, "
                             f"got {batch_size_per_image!r}")
        if not 0 <= positive_fraction <= 1:
            raise ValueError(f"BalancedPositiveNegativeSampler: positive_fraction must be in [0, 1], "
                             f"got {positive_fraction!r}")
        self.batch_size_per_image, self.positive_fraction = int(batch_size_per_image), float(positive_fraction)

    def __call__(self, labels_per_image):
        positive_masks, negative_masks = [], []
        for labels in labels_per_image:
            labels = np.asarray(labels)
            positive, negative = np.nonzero(labels >= 1)[0], np.nonzero(labels == 0)[0]
            num_positive = min(int(self.batch_size_per_image * self.positive_fraction), positive.size)
            num_negative = min(self.batch_size_per_image - num_positive, negative.size)
            positive_masks.append(self._mask(labels.shape, positive, num_positive))
            negative_masks.append(self._mask(labels.shape, negative, num_negative))
        return positive_masks, negative_masks

    @staticmethod
    def _mask(shape, candidates, count):
        """A boolean mask with ``count`` of the ``candidates`` chosen uniformly at random set."""
        mask = np.zeros(shape, bool)
        mask[random.generator().permutation(candidates)[:count]] = True
        return mask
