import warnings

import numpy as np
import pytest

import minseg
from minseg import backend
from minseg.metrics import (
    SegmentationMetrics,
    boundary_accuracy,
    boundary_band,
    boundary_counts,
    confusion_matrix,
    foreground_accuracy,
    mean_dice,
    mean_iou,
    per_class_dice,
    per_class_iou,
    pixel_accuracy,
)

# A 2x3 image, 3 classes, worked by hand:
#   target [[0, 0, 1],      pred [[0, 1, 1],
#           [1, 2, 2]]            [1, 2, 0]]
# rows = target, cols = prediction:
#   class 0 pixels: predicted 0, 1      -> row [1, 1, 0]
#   class 1 pixels: predicted 1, 1      -> row [0, 2, 0]
#   class 2 pixels: predicted 2, 0      -> row [1, 0, 1]
TARGET = np.array([[[0, 0, 1], [1, 2, 2]]])
PRED = np.array([[[0, 1, 1], [1, 2, 0]]])
CM = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_matrix_of_the_hand_worked_example():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, CM)
    np.testing.assert_array_equal(confusion_matrix(minseg.Tensor(PRED), minseg.Tensor(TARGET), 3), CM)


def test_metrics_of_the_hand_worked_example():
    assert pixel_accuracy(CM) == pytest.approx(4 / 6)
    # IoU: class 0 TP 1, FP 1, FN 1 -> 1/3; class 1 TP 2, FP 1, FN 0 -> 2/3; class 2 TP 1, FP 0, FN 1 -> 1/2.
    np.testing.assert_allclose(per_class_iou(CM), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(CM) == pytest.approx(1 / 2)
    # Dice: 2/(2+1+1) = 1/2, 4/(4+1+0) = 4/5, 2/(2+0+1) = 2/3.
    np.testing.assert_allclose(per_class_dice(CM), [1 / 2, 4 / 5, 2 / 3])
    assert mean_dice(CM) == pytest.approx(59 / 90)
    # Void = class 2: four non-void target pixels, three of them right.
    assert foreground_accuracy(CM, void_class=2) == pytest.approx(3 / 4)
    assert foreground_accuracy(CM, void_class=0) == pytest.approx(3 / 4)  # class 1 2/2, class 2 1/2


def test_confusion_matrix_equals_a_pixel_by_pixel_count():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 5, (3, 7, 9)), rng.integers(0, 5, (3, 7, 9))
    target[0, 0, :4] = 255
    expected = np.zeros((5, 5), np.int64)
    for t, p in zip(target.reshape(-1), pred.reshape(-1)):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, target, 5, ignore_index=255), expected)


def test_ignore_index_drops_pixels_even_when_it_is_a_class():
    target = TARGET.copy()
    target[0, 1, 2] = 1  # the pixel (target 2, pred 0) now has target 1 and is ignored
    cm = confusion_matrix(PRED, target, 3, ignore_index=1)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])


def test_absent_class_is_nan_per_class_and_left_out_of_the_mean():
    # Same image with num_classes = 4: class 3 is neither predicted nor present.
    cm = confusion_matrix(PRED, TARGET, 4)
    iou, dice = per_class_iou(cm), per_class_dice(cm)
    assert np.isnan(iou[3]) and np.isnan(dice[3])
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx(1 / 2)
    assert mean_dice(cm) == pytest.approx(59 / 90)
    # A class that is only predicted (a false alarm) is present: it scores 0 and pulls the mean down.
    pred = PRED.copy()
    pred[0, 0, 0] = 3
    cm = confusion_matrix(pred, TARGET, 4)
    np.testing.assert_allclose(per_class_iou(cm), [0, 2 / 3, 1 / 2, 0])
    assert mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 4)


def test_empty_matrix_gives_nan_without_warnings():
    cm = np.zeros((3, 3), np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pixel_accuracy(cm)) and np.isnan(mean_iou(cm)) and np.isnan(mean_dice(cm))
        assert np.all(np.isnan(per_class_iou(cm)))
        assert np.isnan(foreground_accuracy(cm, 0))


def test_dice_is_two_iou_over_one_plus_iou():
    rng = np.random.default_rng(1)
    cm = rng.integers(0, 50, (6, 6))
    cm[4, :] = 0
    cm[:, 4] = 0  # class 4 absent: both NaN
    iou, dice = per_class_iou(cm), per_class_dice(cm)
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou))
    assert np.isnan(dice[4])


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(2)
    batches = [(rng.integers(0, 6, (n, 5, 7)), rng.integers(0, 6, (n, 5, 7))) for n in (1, 3, 2, 4)]
    for _, target in batches:
        target[target == 5] = 255  # some pixels ignored
    metrics = SegmentationMetrics(7, ignore_index=255, void_class=0)
    for i, (pred, target) in enumerate(batches):
        if i % 2:
            pred, target = minseg.Tensor(pred), minseg.Tensor(target)
        metrics.update(pred, target)
    all_pred = np.concatenate([p for p, _ in batches])
    all_target = np.concatenate([t for _, t in batches])
    cm = confusion_matrix(all_pred, all_target, 7, ignore_index=255)
    np.testing.assert_array_equal(metrics.confusion, cm)
    result = metrics.compute()
    assert result["pixel_accuracy"] == pixel_accuracy(cm)
    assert result["foreground_accuracy"] == foreground_accuracy(cm, 0)
    assert result["mean_iou"] == mean_iou(cm)
    assert result["mean_dice"] == mean_dice(cm)
    np.testing.assert_array_equal(result["per_class_iou"], per_class_iou(cm))
    np.testing.assert_array_equal(result["per_class_dice"], per_class_dice(cm))
    # Class 5 never counts as a target (all ignored) but is predicted: a false alarm, IoU 0.
    assert cm[5].sum() == 0 and cm[:, 5].sum() > 0 and result["per_class_iou"][5] == 0.0
    # Class 6 occurs nowhere: NaN, and left out of the mean.
    assert np.isnan(result["per_class_iou"][6]) and np.isnan(result["per_class_dice"][6])
    assert result["mean_iou"] == pytest.approx(np.mean(result["per_class_iou"][:6]))


def test_compute_keys_and_reset():
    metrics = SegmentationMetrics(3)
    metrics.update(PRED, TARGET)
    result = metrics.compute()
    assert set(result) == {"pixel_accuracy", "mean_iou", "per_class_iou", "mean_dice", "per_class_dice"}
    assert isinstance(result["per_class_iou"], list) and isinstance(result["mean_iou"], float)
    assert result["mean_iou"] == pytest.approx(1 / 2)
    metrics.update(PRED, TARGET)  # the same pixels twice: every ratio stays the same
    assert metrics.compute()["per_class_dice"] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert metrics.confusion.sum() == 12
    metrics.reset()
    assert metrics.confusion.sum() == 0 and np.isnan(metrics.compute()["mean_iou"])
    assert "foreground_accuracy" in SegmentationMetrics(3, void_class=2).compute()


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and an NVIDIA GPU")
def test_confusion_matrix_on_gpu_matches_cpu():
    rng = np.random.default_rng(3)
    pred, target = rng.integers(0, 5, (2, 33, 17)), rng.integers(0, 5, (2, 33, 17))
    target[:, 0] = 255
    on_gpu = confusion_matrix(minseg.Tensor(pred).to("cuda"), minseg.Tensor(target).to("cuda"), 5, ignore_index=255)
    assert isinstance(on_gpu, np.ndarray)
    np.testing.assert_array_equal(on_gpu, confusion_matrix(pred, target, 5, ignore_index=255))


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"pred has shape \(1, 2, 3\) but target has shape \(1, 3, 2\)"):
        confusion_matrix(PRED, TARGET.reshape(1, 3, 2), 3)
    with pytest.raises(ValueError, match=r"confusion_matrix: pred has shape \(1, 3, 2, 3\)"):
        confusion_matrix(np.zeros((1, 3, 2, 3)), TARGET, 3)
    with pytest.raises(TypeError, match="pred must hold integer class ids.*to_class_ids"):
        confusion_matrix(PRED.astype(np.float32), TARGET, 3)
    with pytest.raises(ValueError, match=r"target holds ids outside \[0, 2\): \[2\]"):
        confusion_matrix(np.zeros_like(TARGET), TARGET, 2)  # wrong num_classes
    with pytest.raises(ValueError, match=r"pred holds ids outside \[0, 3\): \[-1, 4\]"):
        confusion_matrix(np.array([[[0, -1, 4, 1, 1, 1]]]), TARGET.reshape(1, 1, 6), 3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        confusion_matrix(PRED, TARGET, 0)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(2.5)
    with pytest.raises(ValueError, match="void_class"):
        SegmentationMetrics(3, void_class=3)
    with pytest.raises(ValueError, match="void_class"):
        foreground_accuracy(CM, 5)
    with pytest.raises(ValueError, match="square"):
        per_class_iou(np.zeros((3, 2)))
    metrics = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="target holds ids outside"):
        metrics.update(PRED, TARGET + 1)
    assert metrics.confusion.sum() == 0  # a rejected batch adds nothing


# --- near the label edges ---------------------------------------------------------------------
def test_boundary_band_of_a_step_grows_by_the_width():
    step = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    assert boundary_band(step, 0).nonzero()[1].tolist() == [3, 4]        # the two pixels either side of the edge
    assert boundary_band(step, 1).nonzero()[1].tolist() == [2, 3, 4, 5]
    assert boundary_band(step, 3).all()


def test_boundary_accuracy_of_a_single_pixel_object_by_hand():
    """One class-1 pixel in a 7x7 image: the edge is it and its 4 neighbours (a plus sign); grown by 1 that is
    the 5x5 square around it without its 4 corners, 21 pixels. Predicting all 0 misses only the centre."""
    target = np.zeros((7, 7), np.int64)
    target[3, 3] = 1
    band = boundary_band(target, 1)
    assert band.sum() == 21 and band[1:6, 1:6].sum() == 21 and not band[1, 1] and band[1, 2]
    pred = np.zeros_like(target)
    assert boundary_counts(pred, target, 1) == (20, 21)
    assert boundary_accuracy(pred, target, 1) == pytest.approx(20 / 21)
    assert boundary_counts(pred, target, 1, ignore_index=1) == (20, 20)
    assert np.isnan(boundary_accuracy(pred, pred))                          # no edge, nothing to measure
    assert boundary_counts(pred[None], target[None], 1) == (20, 21)         # batches (N, H, W) too


@pytest.mark.parametrize("call, message", [
    (lambda: boundary_band(np.zeros((3, 3)), -1),
     "boundary_band: width must be an int >= 0, got -1"),
    (lambda: boundary_counts(np.zeros((3, 3)), np.zeros((3, 4))),
     r"boundary_counts: pred has shape \(3, 3\) but target has shape \(3, 4\)"),
])
def test_boundary_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
