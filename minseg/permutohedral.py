"""The permutohedral lattice (Adams, Baek and Davis 2010, "Fast High-Dimensional Filtering Using the Permutohedral
Lattice"): a Gaussian filter over d-dimensional features in time linear in the number of points and in d.

The filter computes, for every point i with feature vector f_i (already divided by the kernel's widths),

    out_i = Σ_j exp(−|f_i − f_j|² / 2) · v_j                                  (v: (P, C) values)

which is O(P²) written out (``crf.gaussian_matrix``). The lattice replaces it by three linear steps:

* **splat**: each point lies inside one simplex of the lattice A*_d (d+1 vertices, found by rounding and sorting);
  it adds its value to those vertices with its barycentric weights;
* **blur**: along each of the lattice's d+1 directions, every vertex becomes itself + ½ (its two neighbours), the
  [1 2 1] kernel (a vertex no point reached counts as 0);
* **slice**: each point reads its d+1 vertices back with the same weights.

The composition approximates the Gaussian up to a constant factor: the barycentric interpolation and the
[1 2 1] blur together are a piecewise-linear kernel of roughly the Gaussian's width, not the Gaussian itself. The
dense CRF (``crf.py``) normalizes each kernel by its own filtered ones, so the constant cancels and only the shape
error is left; ``tests/test_crf.py`` states and checks that tolerance against the exact sum.

Why the lattice and not a bilateral grid (Paris and Durand 2006; Chen et al. 2007): the grid samples the whole
feature box, so its memory grows as (extent / spacing)^d — for the CRF's appearance kernel, d = 5 (x, y, r, g, b),
a dense 5-D NumPy array; the lattice stores only the simplices' vertices that points actually touch, at most
P·(d+1), and each step is a gather or a ``bincount`` over those, which NumPy does without Python loops over points.
The price is the rounding-and-sorting geometry of ``_embed``, written here step by step after the paper's code.
Inference only: nothing here records a graph, and no gradient flows through it.
"""
import numpy as np

__all__ = ["PermutohedralLattice"]


# ---------------------------------------------------------------------------
# The simplex that encloses each point
# ---------------------------------------------------------------------------
def _elevate(features):
    """(P, d) → (P, d+1): the points on the hyperplane Σ x = 0 in which the lattice A*_d lives.

    The scale per coordinate, sqrt(2/3)·(d+1) / sqrt((i+1)(i+2)), is the paper's: it sets the lattice spacing so
    that the blur below is about as wide as a Gaussian of standard deviation 1 in the input's units.
    """
    points, d = features.shape
    scale = np.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt((np.arange(d) + 1.0) * (np.arange(d) + 2.0))
    scaled = features * scale
    suffix = np.zeros((points, d + 1))
    suffix[:, :d] = np.cumsum(scaled[:, ::-1], axis=1)[:, ::-1]      # suffix[:, i] = Σ_{k ≥ i} scaled[:, k]
    elevated = suffix.copy()
    elevated[:, 1:] -= np.arange(1, d + 1) * scaled
    return elevated


def _enclosing_simplex(elevated):
    """Nearest remainder-0 lattice point, the rank of each coordinate's offset, and the barycentric weights.

    Returns ``rem0`` (P, d+1) ints, ``rank`` (P, d+1) (a permutation of 0 … d per point) and ``weights``
    (P, d+1), which are ≥ 0 and sum to 1 for every point.
    """
    points, dims = elevated.shape
    d = dims - 1
    down = np.floor(elevated / dims) * dims
    up = down + dims
    rem0 = np.where(up - elevated < elevated - down, up, down)
    total = np.rint(rem0.sum(axis=1) / dims).astype(np.int64)
    # rank[i]: how many coordinates lie further above their rem0 than coordinate i (ties: the earlier one first)
    order = np.argsort(-(elevated - rem0), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(dims)[None, :].repeat(points, axis=0), axis=1)
    # rem0 must sum to 0: move the `total` coordinates ranked highest (or lowest) by one lattice step
    total = total[:, None]
    too_high = (total > 0) & (rank >= dims - total)
    too_low = (total < 0) & (rank < -total)
    rem0 = rem0 - dims * too_high + dims * too_low
    rank = rank + total - dims * too_high + dims * too_low
    offset = (elevated - rem0) / dims
    barycentric = np.zeros((points, d + 2))
    rows = np.arange(points)[:, None]
    barycentric[rows, d - rank] += offset
    barycentric[rows, d + 1 - rank] -= offset
    barycentric[:, 0] += 1.0 + barycentric[:, d + 1]
    return rem0.astype(np.int64), rank, barycentric[:, :d + 1]


def _vertex_keys(rem0, rank):
    """(P, d+1, d) integer keys of each point's d+1 simplex vertices (the last coordinate is implied by Σ = 0)."""
    dims = rem0.shape[1]
    remainder = np.arange(dims)[:, None]
    canonical = np.where(np.arange(dims)[None, :] <= dims - 1 - remainder, remainder, remainder - dims)
    return rem0[:, None, :-1] + canonical[:, rank[:, :-1]].transpose(1, 0, 2)


# ---------------------------------------------------------------------------
# The lattice
# ---------------------------------------------------------------------------
class PermutohedralLattice:
    """The lattice of one set of points; ``filter(values)`` ≈ c · Σ_j exp(−|f_i − f_j|² / 2) v_j for every i.

    ``features``: (P, d) floats, each column already divided by its kernel width. Built once, filtered many
    times (the CRF filters every mean-field iteration with the same lattice).
    """

    def __init__(self, features):
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or not features.shape[0] or not features.shape[1]:
            raise ValueError(f"PermutohedralLattice: features must be (P, d) with P, d >= 1, got shape "
                             f"{features.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError("PermutohedralLattice: features must be finite; check the image and the kernel widths")
        points, d = features.shape
        rem0, rank, self.weights = _enclosing_simplex(_elevate(features))
        keys = _vertex_keys(rem0, rank).reshape(-1, d)
        # One int64 code per key (digits in base `base`), with room for the neighbours' ±(d+1) steps.
        low = keys.min(axis=0) - (d + 1)
        base = int((keys.max(axis=0) - low).max()) + d + 2
        if base ** d >= 2 ** 62:
            raise ValueError(f"PermutohedralLattice: the features span too many lattice cells ({base} per "
                             f"dimension in {d} dimensions) for int64 keys; use wider kernels")
        self._place = base ** np.arange(d, dtype=np.int64)
        codes = (keys - low) @ self._place
        self.codes, index = np.unique(codes, return_inverse=True)
        self.index = index.reshape(points, d + 1)        # each point's d+1 vertices, as rows of the lattice
        self.neighbours = [self._neighbour_rows(direction, d) for direction in range(d + 1)]

    def _neighbour_rows(self, direction, d):
        """Rows of each vertex's two neighbours along ``direction`` (−1: no such vertex; it counts as 0).

        Along direction j a vertex's neighbours are key − 1 (except key_j + d) and key + 1 (except key_j − d):
        ±(the lattice vector (d+1)·e_j − 1), seen in the first d coordinates.
        """
        step = -np.ones(d, dtype=np.int64)
        if direction < d:
            step[direction] = d
        shift = int(step @ self._place)
        rows = []
        for code in (self.codes + shift, self.codes - shift):
            found = np.minimum(np.searchsorted(self.codes, code), len(self.codes) - 1)
            rows.append(np.where(self.codes[found] == code, found, -1))
        return rows

    @property
    def num_vertices(self):
        return len(self.codes)

    def splat(self, values):
        """(P, C) → (M, C): each point's value spread over its simplex's vertices with its barycentric weights."""
        flat_index, flat_weights = self.index.ravel(), self.weights.ravel()
        return np.stack([np.bincount(flat_index, np.repeat(values[:, c], self.index.shape[1]) * flat_weights,
                                     minlength=self.num_vertices) for c in range(values.shape[1])], axis=1)

    def blur(self, lattice):
        """[1 2 1] / 2 along each lattice direction in turn: v ← v + ½ (v[left] + v[right]), missing ones as 0."""
        for left, right in self.neighbours:
            padded = np.concatenate([lattice, np.zeros((1, lattice.shape[1]))])   # row −1: the missing vertex
            lattice = lattice + 0.5 * (padded[left] + padded[right])
        return lattice

    def slice(self, lattice):
        """(M, C) → (P, C): each point's d+1 vertices read back with its barycentric weights."""
        return np.einsum("pk,pkc->pc", self.weights, lattice[self.index])

    def filter(self, values):
        """slice(blur(splat(values))): the Gaussian-filtered (P, C) ``values``, up to a constant factor."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != self.index.shape[0]:
            raise ValueError(f"PermutohedralLattice.filter: values must be (P, C) with P = {self.index.shape[0]}, "
                             f"got shape {values.shape}")
        return self.slice(self.blur(self.splat(values)))
