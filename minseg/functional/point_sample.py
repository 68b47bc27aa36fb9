"""Bilinear sampling of feature maps at arbitrary points (PointRend's ``point_sample``).

A point is (x, y) in [0, 1] × [0, 1], the image's left/top edge at 0 and its right/bottom edge at 1, as in
PointRend. On an H × W map its pixel coordinates are

    u = x · W − ½,    v = y · H − ½

so pixel (i, j)'s centre, at u = j and v = i, is the point ((j + ½)/W, (i + ½)/H). This is
``torch.nn.functional.grid_sample`` with ``align_corners=False`` and ``padding_mode="zeros"`` on the grid
2·point − 1, which is what ``detectron2``'s ``point_sample`` computes: a neighbour outside the map counts as 0,
so a point on the border mixes the edge pixel with zeros. The formula and its derivative are in
``PointSampleFunction``'s docstring.
"""
import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module

__all__ = ["point_sample"]


# ---------------------------------------------------------------------------
# The four neighbours of every point and their weights
# ---------------------------------------------------------------------------
def _corners(points, height, width, dtype):
    """For each of the 4 neighbours: flat index into the H·W plane (N, P) and weight (N, P).

    A neighbour outside the map gets weight 0 and index 0 (any valid index: its weight erases it).
    """
    xp = get_array_module(points)
    u = points[..., 0].astype(dtype) * dtype.type(width) - dtype.type(0.5)
    v = points[..., 1].astype(dtype) * dtype.type(height) - dtype.type(0.5)
    left, top = xp.floor(u), xp.floor(v)
    right_weight, bottom_weight = u - left, v - top
    corners = []
    for row, row_weight in ((top, 1 - bottom_weight), (top + 1, bottom_weight)):
        for col, col_weight in ((left, 1 - right_weight), (left + 1, right_weight)):
            inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
            index = xp.where(inside, row * width + col, 0).astype(np.int64)
            corners.append((index, xp.where(inside, row_weight * col_weight, 0).astype(dtype)))
    return corners


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class PointSampleFunction(Function):
    """y[n, c, p] = Σ over the 4 neighbours (i, j) of point p: w_ij(p) · x[n, c, i, j]   (0 outside the map).

    With u, v the point's pixel coordinates (module docstring), w_ij = (1 − |u − j|)(1 − |v − i|) for the
    pixels i ∈ {⌊v⌋, ⌊v⌋ + 1}, j ∈ {⌊u⌋, ⌊u⌋ + 1}. y is linear in x, so dL/dx[n, c, i, j] = Σ_p w_ij(p) ·
    gy[n, c, p]: each point hands its gradient back to its neighbours with the same weights (a scatter-add,
    because several points may share a pixel). The points get no gradient: PointRend picks them, it does
    not learn them.
    """

    def __init__(self, points):
        self.points = points  # (N, P, 2) array

    def forward(self, x):
        xp = get_array_module(x)
        n, c, h, w = x.shape
        self.x_shape = x.shape
        self.corners = _corners(self.points, h, w, x.dtype)
        planes = x.reshape(n, c, h * w)
        y = xp.zeros((n, c, self.points.shape[1]), x.dtype)
        for index, weight in self.corners:
            y += xp.take_along_axis(planes, index[:, None, :], axis=2) * weight[:, None, :]
        return y

    def backward(self, grad_y):
        xp = get_array_module(grad_y)
        n, c, h, w = self.x_shape
        # One bincount over flat positions (n, c, pixel) adds every point's share into its pixel at once.
        plane = (xp.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1)
        positions = xp.concatenate([(plane + index[:, None, :]).reshape(-1) for index, _ in self.corners])
        shares = xp.concatenate([(grad_y * weight[:, None, :]).reshape(-1) for _, weight in self.corners])
        grad_x = xp.bincount(positions, weights=shares, minlength=n * c * h * w)
        return grad_x.astype(grad_y.dtype).reshape(self.x_shape)


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------
def point_sample(input, points):
    """Features of ``input`` (N, C, H, W) bilinearly sampled at ``points`` (N, P, 2): returns (N, C, P).

    ``points`` hold (x, y) in [0, 1] (0 and 1 are the map's outer edges; see the module docstring). Equals
    ``torch.nn.functional.grid_sample(input, 2 * points[:, :, None] - 1, align_corners=False)[..., 0]``.
    The gradient flows to ``input`` only.
    """
    input = as_tensor(input)
    points = points.data if isinstance(points, Tensor) else points
    if not hasattr(points, "shape"):
        points = np.asarray(points)
    if input.ndim != 4:
        raise ValueError(f"point_sample: input must be 4-D (N, C, H, W), got shape {input.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"point_sample: input must be floating point, got dtype {input.dtype}")
    if points.ndim != 3 or points.shape[2] != 2 or points.shape[0] != input.shape[0]:
        raise ValueError(f"point_sample: points must have shape (N, P, 2) = ({input.shape[0]}, P, 2) for an input "
                         f"of shape {input.shape}, got {tuple(points.shape)}; pass (x, y) pairs in [0, 1]")
    if points.dtype.kind != "f":
        raise TypeError(f"point_sample: points must be floating-point (x, y) in [0, 1], got dtype {points.dtype}")
    return PointSampleFunction(points)(input)
