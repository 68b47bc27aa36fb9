"""Matcher's labels on hand-built IoU matrices, and the sampler's counts and seeded repeatability."""
import numpy as np
import pytest

import minseg
from minseg.detection.matcher import BalancedPositiveNegativeSampler, Matcher


# ---------------------------------------------------------------------------
# Matcher
# ---------------------------------------------------------------------------
def test_matcher_labels_match_background_and_between():
    # 2 ground truths x 5 predictions.
    iou = np.array([[0.9, 0.5, 0.1, 0.0, 0.35],
                    [0.2, 0.6, 0.8, 0.0, 0.30]])
    matches = Matcher(0.7, 0.3)(iou)
    np.testing.assert_array_equal(matches, [0, Matcher.BETWEEN_THRESHOLDS, 1, Matcher.BELOW_LOW_THRESHOLD,
                                            Matcher.BETWEEN_THRESHOLDS])
    assert matches.dtype == np.int64


def test_equal_thresholds_leave_nothing_between():
    iou = np.array([[0.5, 0.49, 0.7]])
    np.testing.assert_array_equal(Matcher(0.5, 0.5)(iou), [0, -1, 0])


def test_low_quality_matches_give_every_ground_truth_its_best_predictions():
    # Ground truth 1 overlaps at most 0.4 (predictions 1 and 2, a tie): both are matched to it anyway.
    # Prediction 1 is also ground truth 2's best (0.3) but overlaps ground truth 1 more: it keeps 1.
    # Prediction 3 is nobody's best and stays ambiguous.
    iou = np.array([[0.8, 0.1, 0.0, 0.5],
                    [0.0, 0.4, 0.4, 0.3],
                    [0.0, 0.3, 0.0, 0.0]])
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(iou), [0, -2, -2, -2])
    np.testing.assert_array_equal(Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou), [0, 1, 1, -2])


def test_no_ground_truth_makes_everything_background():
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(np.zeros((0, 4))), [-1, -1, -1, -1])


def test_matcher_bad_arguments():
    with pytest.raises(ValueError, match="Matcher: low_threshold must be between 0 and high_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match=r"Matcher: match_quality_matrix must be 2-D .* got shape \(3,\)"):
        Matcher(0.7, 0.3)(np.zeros(3))


# ---------------------------------------------------------------------------
# BalancedPositiveNegativeSampler
# ---------------------------------------------------------------------------
def labels_with(positives, negatives, ignored):
    return np.array([1] * positives + [0] * negatives + [-1] * ignored)


@pytest.mark.parametrize("positives, negatives, expected", [
    (100, 1000, (16, 48)),  # plenty of both: the fraction decides
    (5, 1000, (5, 59)),     # few positives: negatives fill the batch
    (100, 10, (16, 10)),    # few negatives: the batch stays short
    (0, 0, (0, 0)),
])
def test_sampler_counts(positives, negatives, expected):
    labels = labels_with(positives, negatives, 7)
    pos, neg = BalancedPositiveNegativeSampler(64, 0.25)([labels])
    assert (int(pos[0].sum()), int(neg[0].sum())) == expected
    assert not (pos[0] & neg[0]).any()
    assert (labels[pos[0]] >= 1).all() and (labels[neg[0]] == 0).all()


def test_sampler_counts_class_labels_above_one_as_positive():
    pos, neg = BalancedPositiveNegativeSampler(4, 0.5)([np.array([3, 2, 0, 0, 0, -1])])
    np.testing.assert_array_equal(pos[0], [True, True, False, False, False, False])
    assert neg[0].sum() == 2 and not neg[0][-1]


def test_sampler_is_repeatable_with_a_seed_and_varies_without():
    labels = [labels_with(50, 500, 0), labels_with(30, 300, 3)]
    sampler = BalancedPositiveNegativeSampler(32, 0.5)
    minseg.manual_seed(7)
    first = sampler(labels)
    second = sampler(labels)
    minseg.manual_seed(7)
    again = sampler(labels)
    for a, b in zip(first[0] + first[1], again[0] + again[1]):
        np.testing.assert_array_equal(a, b)
    assert any((a != b).any() for a, b in zip(first[1], second[1]))


def test_sampler_bad_arguments():
    with pytest.raises(ValueError, match="batch_size_per_image must be a positive integer, got 0"):
        BalancedPositiveNegativeSampler(0, 0.5)
    with pytest.raises(ValueError, match=r"positive_fraction must be in \[0, 1\], got 1.5"):
        BalancedPositiveNegativeSampler(8, 1.5)
