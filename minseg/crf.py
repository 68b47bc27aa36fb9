"""The fully connected CRF (Krähenbühl and Koltun 2011, "Efficient Inference in Fully Connected CRFs with Gaussian
Edge Potentials"), as DeepLab (Chen et al. 2016, arXiv 1606.00915) runs it on a network's softmax.

A network's scores are blurry at object edges: each comes from a wide window, and DeepLab's from a map 8x coarser
than the image. The CRF adds what the network does not model: pixels that look alike and lie close should take
the same class. Its energy over a labelling x is

    E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} [x_i ≠ x_j] · k(i, j)                              (Potts compatibility)
    ψ_u(x_i) = −log P(x_i | image)                                                    (the network's softmax)
    k(i, j) = w1 · exp(−|p_i − p_j|² / 2θα² − |I_i − I_j|² / 2θβ²)       appearance: nearby, similar colour
            + w2 · exp(−|p_i − p_j|² / 2θγ²)                              smoothness: nearby

with p the pixel's position and I its colour, over ALL pairs of pixels, not only neighbours.

**Mean field.** Exact inference is intractable; mean field approximates P(x) by a product Q(x) = Π_i Q_i(x_i) and
updates every Q_i at once:

    Q_i(l) ∝ exp(−ψ_u,i(l) + Σ_m w_m Σ_j k̃_m(i, j) Q_j(l))                                     (one iteration)

The sum over j is the *message*: a Gaussian filter of Q, one per kernel m. Each kernel is normalized
symmetrically, k̃_m(i, j) = k_m(i, j) / sqrt(n_i n_j) with n_i = Σ_j k_m(i, j), as the authors' released code
(densecrf 2.x, after their 2013 paper below; the 2011 code divided by n_i alone) does by default: the weights then
do not depend on the image size, and the kernel stays symmetric. j runs over every pixel, i
included, as the filter gives it. Then the mean-field free energy

    F(Q) = Σ_i Σ_l Q_i(l) (ψ_u,i(l) + log Q_i(l)) − ½ Σ_l Σ_i Q_i(l) Σ_m w_m Σ_j k̃_m(i, j) Q_j(l)

(KL(Q ‖ P) − log Z up to a constant, with the pairs j = i that the filter includes counted as independent pairs)
never increases from one iteration to the next: the kernels are positive semidefinite, so the second term is
concave in Q, and one parallel update minimizes the first term plus the second one's tangent at the current Q, a
concave-convex procedure (Krähenbühl and Koltun 2013, "Parameter Learning and Convergent Inference for Dense
Random Fields"). The guarantee is the exact kernel's; the lattice's filter is only nearly symmetric, so there the
decrease is observed, not proven. ``dense_crf(..., return_energies=True)`` returns F at every iteration;
``tests/test_crf.py`` checks the decrease for both methods.

**Two message passings.** ``method="exact"`` writes the kernel as a P×P matrix (``gaussian_matrix``), the
definition, feasible up to a few thousand pixels: the reference. ``method="lattice"`` (the default) filters with
the permutohedral lattice (``permutohedral.py``; that module says why a lattice and not a bilateral grid) in time
linear in P, within the approximation ``tests/test_crf.py`` states.

**Defaults.** w1 = 10, θα = 80, θβ = 13, w2 = 3, θγ = 3: the authors' released code's (densecrf 2.2). DeepLab
keeps w2 = θγ = 3 and cross-validates the appearance kernel per dataset, over w1 ∈ [3, 6], θα ∈ [30, 100],
θβ ∈ [3, 6] (Chen et al. 2016, section 4); 10 iterations as DeepLab. ``docs/crf.md`` shows what the defaults do
to small images. Widths are in pixels and in
colour levels (0–255).

Inference only: plain NumPy on a (C, H, W) probability array, no ``Function`` and no gradient. DeepLab trains the
network without it and applies it after the softmax (``Predictor(crf=...)``, ``minseg predict --crf``).
"""
import numpy as np

from .permutohedral import PermutohedralLattice

__all__ = ["dense_crf", "gaussian_matrix", "kernel_features"]

# The exact method's P×P matrix stops here (8 bytes · P² per kernel): use the lattice above it.
MAX_EXACT_PIXELS = 6000


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------
def _as_image(image, height, width):
    """(H, W, 3) or (H, W) colours as float64 (H, W, channels)."""
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    if image.ndim != 3 or image.shape[:2] != (height, width):
        raise ValueError(f"dense_crf: image must be (H, W, 3) or (H, W) with H, W = {height}, {width} (the "
                         f"probabilities' size), got shape {image.shape}")
    return image.astype(np.float64)


def kernel_features(image, theta_alpha, theta_beta, theta_gamma):
    """The two kernels' feature vectors per pixel, each divided by its width: (P, 2 + colours) and (P, 2).

    A Gaussian kernel exp(−|f_i − f_j|² / 2) of these features is the appearance kernel (position / θα, colour
    / θβ) and the smoothness kernel (position / θγ).
    """
    height, width = image.shape[:2]
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    position = np.stack([rows.ravel(), cols.ravel()], axis=1)
    colour = image.reshape(height * width, -1)
    return np.concatenate([position / theta_alpha, colour / theta_beta], axis=1), position / theta_gamma


def gaussian_matrix(features):
    """(P, P) exp(−|f_i − f_j|² / 2): the kernel written out, for the exact method and the tests."""
    squared = np.sum(features ** 2, axis=1)
    distance = squared[:, None] + squared[None, :] - 2.0 * features @ features.T
    return np.exp(-0.5 * np.maximum(distance, 0.0))


class _ExactKernel:
    """k̃ v = D^(−½) K D^(−½) v with K the written-out Gaussian and D = diag(K·1)."""

    def __init__(self, features):
        self.matrix = gaussian_matrix(features)
        norm = 1.0 / np.sqrt(self.matrix.sum(axis=1))
        self.matrix *= norm[:, None] * norm[None, :]

    def __call__(self, values):
        return self.matrix @ values


class _LatticeKernel:
    """The same through the permutohedral lattice: filter(v / sqrt(n)) / sqrt(n), n = filter(1).

    The lattice's constant factor c cancels: c·K(v / sqrt(c n)) / sqrt(c n) = K(v / sqrt(n)) / sqrt(n).
    """

    def __init__(self, features):
        self.lattice = PermutohedralLattice(features)
        self.norm = 1.0 / np.sqrt(self.lattice.filter(np.ones((len(features), 1))))

    def __call__(self, values):
        return self.norm * self.lattice.filter(values * self.norm)


# ---------------------------------------------------------------------------
# Mean field
# ---------------------------------------------------------------------------
def _softmax(scores):
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)


def _free_energy(q, unary, message):
    """F(Q) of the module docstring, given the message Σ_m w_m k̃_m Q of this very Q."""
    entropy_term = np.sum(q * np.log(np.maximum(q, 1e-300)))
    return float(np.sum(q * unary) + entropy_term - 0.5 * np.sum(q * message))


def _check(probabilities, iterations, method, widths, weights):
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or not np.issubdtype(probabilities.dtype, np.floating):
        raise ValueError(f"dense_crf: probabilities must be a float (C, H, W) softmax, got {probabilities.dtype} "
                         f"{probabilities.shape}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"dense_crf: iterations must be an int >= 0, got {iterations!r}")
    if method not in ("lattice", "exact"):
        raise ValueError(f"dense_crf: method must be 'lattice' or 'exact', got {method!r}")
    for name, value in widths.items():
        if not value > 0:
            raise ValueError(f"dense_crf: {name} must be > 0 (a kernel width), got {value!r}")
    for name, value in weights.items():
        if not value >= 0:
            raise ValueError(f"dense_crf: {name} must be >= 0 (a kernel weight), got {value!r}")
    pixels = probabilities.shape[1] * probabilities.shape[2]
    if method == "exact" and pixels > MAX_EXACT_PIXELS:
        raise ValueError(f"dense_crf: method='exact' writes a P×P kernel and takes at most {MAX_EXACT_PIXELS} "
                         f"pixels, got {pixels}; use method='lattice'")
    return probabilities


def dense_crf(probabilities, image, iterations=10, w1=10.0, theta_alpha=80.0, theta_beta=13.0, w2=3.0,
              theta_gamma=3.0, method="lattice", return_energies=False):
    """Mean-field inference in the fully connected CRF on one image (see the module docstring for the model).

    probabilities: (C, H, W) softmax of the network (NumPy); image: (H, W, 3) or (H, W) colours in 0–255, the
    image the network saw before normalization. w1, theta_alpha, theta_beta: the appearance kernel's weight and
    widths (position in pixels, colour in levels); w2, theta_gamma: the smoothness kernel's. iterations: mean-field
    updates (0 returns the input, renormalized). method: "lattice" (fast) or "exact" (the O(P²) reference).
    Returns float32 (C, H, W) marginals Q; with ``return_energies`` also the free energy F before each update and
    after the last (iterations + 1 floats).
    """
    probabilities = _check(probabilities, iterations, method, dict(theta_alpha=theta_alpha, theta_beta=theta_beta,
                                                                  theta_gamma=theta_gamma), dict(w1=w1, w2=w2))
    classes, height, width = probabilities.shape
    colours = _as_image(image, height, width)
    unary = -np.log(np.clip(probabilities.reshape(classes, -1).T.astype(np.float64), 1e-8, 1.0))   # (P, C)
    kernel = _ExactKernel if method == "exact" else _LatticeKernel
    appearance, smoothness = (kernel(features) for features in
                              kernel_features(colours, theta_alpha, theta_beta, theta_gamma))

    def message(q):
        return w1 * appearance(q) + w2 * smoothness(q)

    q, energies = _softmax(-unary), []
    for _ in range(iterations):
        incoming = message(q)
        if return_energies:
            energies.append(_free_energy(q, unary, incoming))
        q = _softmax(-unary + incoming)
    result = q.T.reshape(classes, height, width).astype(np.float32)
    if not return_energies:
        return result
    return result, energies + [_free_energy(q, unary, message(q))]
