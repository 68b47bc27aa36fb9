"""The fully connected CRF (minseg.crf) and the permutohedral lattice behind its fast message passing.

The CRF is inference only (no Function, no gradient), so there is no gradcheck here: the tests check the lattice's
geometry, the lattice filter against the written-out Gaussian within its approximation, the mean-field update on a
case small enough for paper, and that every iteration lowers the free energy.

The lattice's tolerance: its kernel is the Gaussian only approximately (barycentric interpolation into a simplex
and a [1 2 1] blur make a piecewise-smooth kernel whose shape depends on where a point falls in its simplex), with
an unknown constant factor. The CRF normalizes each kernel by its filtered ones, so the factor cancels and the
normalized messages are weighted averages of values in [0, 1]. The tests require, of those messages, 99% within
0.05 of the exact ones and the mean difference below 0.02; single entries may differ by up to 0.3: a pixel whose
colour no other pixel shares has a message made mostly of its own value, and the lattice weighs a point against
itself by its interpolation weights, not by the Gaussian's exp(0) = 1. After the CRF the marginals must agree
within 0.02, and the labels on 99% of the pixels. The differences measured on these images are about half of
each bound.
"""
import numpy as np
import pytest

from minseg.crf import MAX_EXACT_PIXELS, _ExactKernel, _LatticeKernel, dense_crf, gaussian_matrix, kernel_features
from minseg.permutohedral import PermutohedralLattice, _elevate, _enclosing_simplex


def two_region_image(height=24, width=32, seed=0):
    """A red left half and a blue right half with noise, and probabilities that mostly (not always) agree."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3))
    image[:, :width // 2], image[:, width // 2:] = (200, 40, 40), (40, 40, 200)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    probabilities = np.full((3, height, width), 0.2)
    probabilities[0, :, :width // 2] += 0.3
    probabilities[1, :, width // 2:] += 0.3
    probabilities += rng.uniform(0, 0.45, probabilities.shape)
    return image, probabilities / probabilities.sum(axis=0)


# --- the lattice --------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_each_point_is_the_barycentric_mix_of_its_simplex_vertices(d):
    features = np.random.default_rng(d).normal(size=(500, d)) * 3
    elevated = _elevate(features)
    rem0, rank, weights = _enclosing_simplex(elevated)
    remainder = np.arange(d + 1)[:, None]
    canonical = np.where(np.arange(d + 1)[None, :] <= d - remainder, remainder, remainder - (d + 1))
    vertices = rem0[:, None, :] + canonical[:, rank].transpose(1, 0, 2)           # (P, d+1 vertices, d+1)
    np.testing.assert_allclose(elevated.sum(axis=1), 0, atol=1e-12)               # the hyperplane Σ x = 0
    assert np.all(vertices.sum(axis=2) == 0)
    assert np.all((vertices - remainder[None]) % (d + 1) == 0)                    # vertex r: every coordinate ≡ r
    assert np.all(weights >= 0) and np.allclose(weights.sum(axis=1), 1)
    np.testing.assert_allclose(np.einsum("pk,pkc->pc", weights, vertices), elevated, atol=1e-10)


def test_the_lattice_is_exact_when_all_points_coincide():
    values = np.random.default_rng(1).uniform(size=(50, 2))
    lattice = PermutohedralLattice(np.full((50, 5), 0.7))
    filtered = lattice.filter(values)
    np.testing.assert_allclose(filtered, np.broadcast_to(filtered[0], filtered.shape))   # one lattice cell for all
    np.testing.assert_allclose(filtered[0] / lattice.filter(np.ones((50, 1)))[0], values.mean(axis=0))


@pytest.mark.parametrize("theta_alpha, theta_beta, theta_gamma", [(80, 13, 3), (10, 13, 3), (5, 20, 1.5)])
def test_lattice_messages_match_the_exact_ones_within_the_stated_tolerance(theta_alpha, theta_beta, theta_gamma):
    image, _ = two_region_image()
    values = np.random.default_rng(2).uniform(size=(image.shape[0] * image.shape[1], 3))
    for features in kernel_features(image.astype(float), theta_alpha, theta_beta, theta_gamma):
        exact, fast = _ExactKernel(features)(values), _LatticeKernel(features)(values)
        difference = np.abs(fast - exact)
        assert np.quantile(difference, 0.99) <= 0.05 and difference.mean() <= 0.02 and difference.max() <= 0.3


def test_gaussian_matrix_is_the_definition():
    features = np.random.default_rng(3).normal(size=(7, 3))
    loop = [[np.exp(-0.5 * np.sum((features[i] - features[j]) ** 2)) for j in range(7)] for i in range(7)]
    np.testing.assert_allclose(gaussian_matrix(features), loop, rtol=1e-12)


# --- mean field --------------------------------------------------------------------------------
def test_one_iteration_on_two_pixels_by_hand():
    """Two pixels 1 apart, same colour. Each kernel is [[1, k], [k, 1]] with n = 1 + k on both rows, so
    k̃ = K / (1 + k), and the update is Q_i ∝ p_i · exp(Σ_m w_m (Q_i + k_m Q_j) / (1 + k_m))."""
    p = np.array([[[0.9, 0.4]], [[0.1, 0.6]]])                                   # (C=2, H=1, W=2)
    image = np.full((1, 2, 3), 100, np.uint8)
    w1, ta, w2, tg = 2.0, 4.0, 1.5, 2.0
    q = dense_crf(p, image, iterations=1, w1=w1, theta_alpha=ta, w2=w2, theta_gamma=tg, method="exact")
    k1, k2 = np.exp(-1 / (2 * ta ** 2)), np.exp(-1 / (2 * tg ** 2))
    pix = p[:, 0, :]                                                              # (C, 2)
    message = sum(w * (pix + k * pix[:, ::-1]) / (1 + k) for w, k in ((w1, k1), (w2, k2)))
    expected = pix * np.exp(message)
    np.testing.assert_allclose(q[:, 0, :], expected / expected.sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("method", ["exact", "lattice"])
@pytest.mark.parametrize("options", [{}, {"w1": 4.0, "theta_alpha": 8.0, "theta_beta": 5.0, "w2": 3.0}])
def test_every_iteration_lowers_the_free_energy(method, options):
    image, probabilities = two_region_image(seed=4)
    q, energies = dense_crf(probabilities, image, iterations=6, method=method, return_energies=True, **options)
    assert len(energies) == 7
    assert all(after <= before + 1e-9 * abs(before) for before, after in zip(energies, energies[1:]))
    assert energies[-1] < energies[0]
    np.testing.assert_allclose(q.sum(axis=0), 1, rtol=1e-5)


def test_the_crf_cleans_the_labels_and_the_lattice_agrees_with_the_exact_method():
    image, probabilities = two_region_image(seed=5)
    truth = np.broadcast_to(np.arange(32) >= 16, (24, 32))
    exact = dense_crf(probabilities, image, method="exact")
    fast = dense_crf(probabilities, image)
    assert (probabilities.argmax(axis=0) == truth).mean() < 0.99
    assert (exact.argmax(axis=0) == truth).mean() == 1.0
    assert (fast.argmax(axis=0) == exact.argmax(axis=0)).mean() >= 0.99
    assert np.abs(fast - exact).max() <= 0.02


def test_no_iterations_and_zero_weights_keep_the_network_s_softmax():
    image, probabilities = two_region_image(seed=6)
    np.testing.assert_allclose(dense_crf(probabilities, image, iterations=0), probabilities, rtol=1e-6)
    np.testing.assert_allclose(dense_crf(probabilities, image, w1=0, w2=0), probabilities, rtol=1e-6)


def test_a_greyscale_image_gives_one_colour_feature():
    image, probabilities = two_region_image(seed=7)
    grey = image.mean(axis=2).astype(np.uint8)
    assert kernel_features(grey[..., None].astype(float), 80, 13, 3)[0].shape == (24 * 32, 3)
    q = dense_crf(probabilities, grey)
    assert q.shape == probabilities.shape and q.dtype == np.float32


@pytest.mark.parametrize("call, message", [
    (lambda p, im: dense_crf(p[0], im), r"dense_crf: probabilities must be a float \(C, H, W\) softmax"),
    (lambda p, im: dense_crf(p, im[:5]), r"dense_crf: image must be \(H, W, 3\) or \(H, W\) with H, W = 24, 32"),
    (lambda p, im: dense_crf(p, im, iterations=-1), "dense_crf: iterations must be an int >= 0, got -1"),
    (lambda p, im: dense_crf(p, im, method="grid"), "dense_crf: method must be 'lattice' or 'exact', got 'grid'"),
    (lambda p, im: dense_crf(p, im, theta_beta=0), r"dense_crf: theta_beta must be > 0 \(a kernel width\), got 0"),
    (lambda p, im: dense_crf(p, im, w2=-1), r"dense_crf: w2 must be >= 0 \(a kernel weight\), got -1"),
    (lambda p, im: dense_crf(np.ones((2, 100, 100)) / 2, np.zeros((100, 100)), method="exact"),
     f"dense_crf: method='exact' writes a P×P kernel and takes at most {MAX_EXACT_PIXELS} pixels, got 10000"),
    (lambda p, im: PermutohedralLattice(np.zeros((3, 2))).filter(np.ones((4, 1))),
     r"PermutohedralLattice.filter: values must be \(P, C\) with P = 3, got shape \(4, 1\)"),
])
def test_bad_arguments_are_named(call, message):
    image, probabilities = two_region_image()
    with pytest.raises(ValueError, match=message):
        call(probabilities, image)
