"""Tests for PointRend: uncertainty, point selection, subdivision to the input resolution, the loss, counts."""
import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.gradcheck import gradcheck
from minseg.models import create
from minseg.models.pointrend import (
    PointHead,
    PointRend,
    labels_at_points,
    most_uncertain,
    select_training_points,
    uncertain_grid_points,
    uncertainty,
)


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def count_parameters(model):
    return sum(p.size for p in model.parameters())


def boundary_logits(height, width, classes=3):
    """Logits whose top-2 gap is |x − ½|·10 (x the cell centre's horizontal position): unsure along x = ½ only."""
    x = (np.arange(width) + 0.5) / width
    logits = np.zeros((1, classes, height, width), np.float32)
    logits[0, 0] = np.abs(x - 0.5) * 10   # class 0 beats the rest by |x − ½|·10
    logits[0, 2] = -5.0                   # a third class far behind: the gap is between the top TWO
    return logits


# --- uncertainty and selection --------------------------------------------------------------
def test_uncertainty_is_minus_the_gap_between_the_top_two_logits():
    logits = np.array([[[3.0, 1.0, 0.0], [1.0, 0.9, 5.0], [-2.0, 0.0, 4.0]]])  # (1, C=3, 3 points)
    np.testing.assert_allclose(uncertainty(logits), [[-2.0, -0.1, -1.0]])


def test_most_uncertain_keeps_exactly_the_smallest_gaps():
    rng = np.random.default_rng(0)
    points = rng.random((2, 50, 2))
    logits = rng.standard_normal((2, 4, 50))
    kept = most_uncertain(points, logits, 7)
    for n in range(2):
        expected = points[n][np.argsort(-uncertainty(logits)[n])[:7]]
        np.testing.assert_array_equal(np.sort(kept[n], axis=0), np.sort(expected, axis=0))


def test_training_points_are_the_most_uncertain_on_a_constructed_example():
    minseg.manual_seed(0)
    logits = boundary_logits(16, 32)
    points = select_training_points(logits, num_points=100, oversample=4, importance=1.0)
    assert points.shape == (1, 100, 2)
    # Keeping the 100 of 400 uniform candidates nearest to x = ½ keeps those within about 1/8 of it.
    assert np.max(np.abs(points[0, :, 0] - 0.5)) < 0.2
    # With importance 0.5, half are the uncertain ones and half uniform: the uniform half spreads out.
    points = select_training_points(logits, num_points=100, oversample=4, importance=0.5)
    assert np.max(np.abs(points[0, :50, 0] - 0.5)) < 0.3
    assert np.max(np.abs(points[0, 50:, 0] - 0.5)) > 0.4
    assert np.all((points >= 0) & (points <= 1))


def test_grid_points_are_the_centres_of_the_most_uncertain_cells():
    logits = boundary_logits(4, 8)  # columns 3 and 4 (centres 7/16, 9/16) have the smallest gap
    indices, centres = uncertain_grid_points(logits, 8)
    assert sorted(indices[0] % 8) == [3] * 4 + [4] * 4
    np.testing.assert_allclose(np.sort(centres[0, :, 0]), [7 / 16] * 4 + [9 / 16] * 4)
    # point_sample at a cell centre reads that cell exactly.
    sampled = F.point_sample(Tensor(logits), centres).numpy()
    np.testing.assert_allclose(sampled, logits.reshape(1, 3, 32)[:, :, indices[0]])
    assert uncertain_grid_points(logits, 1000)[0].shape == (1, 32)  # never more points than cells


def test_labels_at_points_read_the_pixel_under_each_point():
    target = np.arange(12).reshape(1, 3, 4)
    points = np.array([[[0.1, 0.1], [0.99, 0.99], [0.5, 0.5], [1.0, 1.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(labels_at_points(target, points), [[0, 11, 6, 11, 0]])


# --- the point head -------------------------------------------------------------------------
def test_point_head_is_one_mlp_shared_by_all_points():
    minseg.manual_seed(0)
    head = PointHead(fine_channels=5, num_classes=3, fc_dim=8, num_fc=2)
    fine, coarse = random_input((2, 5, 7), seed=1), random_input((2, 3, 7), seed=2)
    out = head(fine, coarse).numpy()
    assert out.shape == (2, 3, 7)
    # Point 4 alone gives the same scores as point 4 among the others.
    np.testing.assert_allclose(head(fine[:, :, 4:5], coarse[:, :, 4:5]).numpy()[:, :, 0], out[:, :, 4], rtol=1e-5)


def test_gradient_reaches_the_features_through_the_sampled_points():
    minseg.manual_seed(0)
    head = PointHead(fine_channels=2, num_classes=2, fc_dim=3, num_fc=1)
    for p in head.parameters():
        p.data = p.data.astype(np.float64)
    rng = np.random.default_rng(3)
    fine = Tensor(rng.standard_normal((1, 2, 3, 5)), requires_grad=True)
    coarse = Tensor(rng.standard_normal((1, 2, 3, 5)), requires_grad=True)
    points = rng.random((1, 6, 2))
    assert gradcheck(lambda f, c: head(F.point_sample(f, points), F.point_sample(c, points)), [fine, coarse])


# --- the model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    minseg.manual_seed(0)
    return PointRend(5, num_points=64, subdivision_points=128)


def test_training_forward_returns_the_upsampled_coarse_logits_and_keeps_the_points(model):
    model.train()
    x = random_input((2, 3, 64, 96))
    y = model(x)
    assert y.shape == (2, 5, 64, 96)
    assert model.last_points.points.shape == (2, 64, 2) and model.last_points.logits.shape == (2, 5, 64)


def test_loss_adds_the_point_cross_entropy_after_a_training_forward(model):
    model.train()
    x = random_input((1, 3, 64, 64), seed=1)
    target = Tensor(np.random.default_rng(2).integers(0, 5, (1, 64, 64)))
    y = model(x)
    last = model.last_points
    expected = (F.cross_entropy(y, target).item()
                + F.cross_entropy(last.logits, Tensor(labels_at_points(target.data, last.points))).item())
    assert model.loss(y, target).item() == pytest.approx(expected, rel=1e-6)
    assert model.loss(y, target).item() == pytest.approx(F.cross_entropy(y, target).item())  # points used once


def test_subdivision_reaches_the_input_resolution_and_only_changes_uncertain_cells(model):
    model.eval()
    x = random_input((2, 3, 64, 96), seed=3)
    with minseg.no_grad():
        y = model(x)
        coarse, fine = model.coarse_prediction(x)
        halfway = model.subdivide(coarse, fine, (32, 48))  # stop after the first step
    assert coarse.shape[2:] == (16, 24) and halfway.shape[2:] == (32, 48) and y.shape == (2, 5, 64, 96)
    # Each step is bilinear x2 except at the subdivision_points cells the point head re-predicts.
    for before, after in ((coarse, halfway), (halfway, y)):
        plain = F.interpolate(before, scale_factor=2, mode="bilinear", align_corners=False).numpy()
        changed = np.any(np.abs(after.numpy() - plain) > 1e-6, axis=1).reshape(2, -1).sum(axis=1)
        assert np.all(changed > 0) and np.all(changed <= 128)
    np.testing.assert_allclose(model(x).numpy(), y.numpy())  # inference draws nothing at random


def test_parameter_count():
    # smp's FPN on ResNet-18 with 32 classes: 13,051,232. Point head on 64 fine channels + 32 coarse scores:
    # (96·256 + 256) + 2·(288·256 + 256) + (288·32 + 32) = 24,832 + 147,968 + 9,248 = 182,048.
    assert 24_832 + 147_968 + 9_248 == 182_048
    assert count_parameters(PointRend(32)) == 13_051_232 + 182_048 == 13_233_280
    assert count_parameters(create("pointrend", 32)) == 13_233_280


def test_size_error():
    with pytest.raises(ValueError, match="PointRend on FPN needs height and width divisible by 32"):
        PointRend(3)(random_input((1, 3, 48, 64)))
