"""Max unpooling (SegNet's decoder): each value goes back to where ``max_pool2d`` found its maximum.

The output is zeros except at the pooled indices, so unpooling is a scatter and its gradient the matching
gather; both run over all N·C planes at once through one flat index array (``_flat_plane_indices``).
"""
import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..backend import check_same_device, get_array_module
from .pooling import _check_4d, _window_pairs

__all__ = ["max_unpool2d"]


# ---------------------------------------------------------------------------
# One flat index per element of all N·C planes
# ---------------------------------------------------------------------------
def _flat_plane_indices(indices, plane):
    """(N·C·L,) indices into all N·C output planes at once: each plane's index plus that plane's start.

    One flat index array is NumPy's fast scatter/gather; a (plane, index) pair of arrays goes through its
    general multi-index machinery.
    """
    n, c = indices.shape[:2]
    plane_start = get_array_module(indices).arange(0, n * c * plane, plane, dtype=indices.dtype).reshape(-1, 1)
    return (indices.reshape(n * c, -1) + plane_start).reshape(-1)


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class MaxUnpool2dFunction(Function):
    """y = zeros of the output size, with y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j].

    Unpooling puts each value back where max pooling found it. y is a permutation of x
    padded with zeros, so the gradient for x is grad_y read at the same places.
    The indices receive no gradient, so they are an argument, not an input: the graph then
    keeps only ``flat_indices`` (``_flat_plane_indices``), not the indices as well.
    """

    def __init__(self, output_hw, flat_indices):
        self.output_hw, self.flat_indices = output_hw, flat_indices

    def forward(self, x):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        self.x_shape = x.shape
        y = xp.zeros(n * c * self.output_hw[0] * self.output_hw[1], dtype=x.dtype)
        y[self.flat_indices] = x.reshape(-1)
        return y.reshape(n, c, *self.output_hw)

    def backward(self, grad_y):
        return (grad_y.reshape(-1).take(self.flat_indices).reshape(self.x_shape),)


# ---------------------------------------------------------------------------
# Public function: argument checks, then one Function
# ---------------------------------------------------------------------------
def _unpooled_size(input, kernel, stride, padding, output_size):
    """(H − 1)·s − 2p + k along each axis (the transposed convolution's rule), or ``output_size`` if given."""
    default = tuple((input.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + kernel[a] for a in range(2))
    if output_size is None:
        return default
    if len(tuple(output_size)) not in (2, 4):
        raise ValueError(f"max_unpool2d: output_size must have 2 or 4 entries, got {output_size!r}")
    output_hw = tuple(int(v) for v in tuple(output_size)[-2:])
    for a in range(2):
        if not default[a] - stride[a] < output_hw[a] < default[a] + stride[a]:
            raise ValueError(f"max_unpool2d: output_size {output_hw} must be within one stride of the "
                             f"default size {default} (stride {stride})")
    return output_hw


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of ``max_pool2d``: values go back to ``indices``, zeros elsewhere.

    Output size defaults to (H − 1)·s − 2p + k; ``output_size`` ((H, W), or a 4-tuple whose
    last two entries are used) picks another within one stride of it, as PyTorch.
    """
    input = as_tensor(input)
    _check_4d(input, "max_unpool2d")
    kernel, stride, padding = _window_pairs(kernel_size, stride, padding, "max_unpool2d")
    indices = indices if isinstance(indices, Tensor) else Tensor(indices)
    if indices.shape != input.shape:
        raise ValueError(f"max_unpool2d: indices has shape {indices.shape} but input has {input.shape}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"max_unpool2d: indices must be integers (from max_pool2d(..., return_indices=True)), "
                        f"got dtype {indices.dtype}")
    check_same_device([input.data, indices.data], "max_unpool2d")
    output_hw = _unpooled_size(input, kernel, stride, padding, output_size)
    plane = output_hw[0] * output_hw[1]
    indices_int64 = indices.data.astype(np.int64, copy=False)
    # Viewed as uint64 a negative index is ≥ 2⁶³, so one max over the indices finds any outside [0, plane).
    if indices_int64.size and int(indices_int64.view(np.uint64).max()) >= plane:
        raise ValueError(f"max_unpool2d: indices must lie in [0, {plane}) for an output of size {output_hw}, "
                         f"got values in [{int(indices_int64.min())}, {int(indices_int64.max())}]")
    return MaxUnpool2dFunction(output_hw, _flat_plane_indices(indices_int64, plane))(input)
