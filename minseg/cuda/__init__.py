"""The bridge to the CUDA kernels in ``kernels/*.cu``: the only package that knows they exist.

``functional/conv.py`` and ``functional/loss.py`` compute with NumPy-style array code; when their
arrays are float32 CuPy arrays they call the functions here instead, of the same names and arguments.
Read it as a table of contents:

- ``launch.py``: find the ``.cu`` sources, compile them (CuPy's NVRTC, once per file and device),
  check and allocate arrays, launch;
- ``plan.py``: launch planning in plain Python (block tiles, splits of K, stride phases), tested
  without a GPU;
- ``conv.py``: ``conv2d_forward``, ``conv2d_backward_input``, ``conv2d_backward_weight`` on
  ``kernels/conv2d.cu``;
- ``cross_entropy.py``: ``softmax_cross_entropy_forward`` / ``_backward`` on
  ``kernels/softmax_cross_entropy.cu``.

CuPy is imported only inside these functions, so ``import minseg`` never needs it. Without a GPU,
tests/cuda_emulation runs these same functions and kernels on the CPU (docs/gpu.md).
"""
from .conv import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from .cross_entropy import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .launch import kernel_dir, kernel_sources
from .plan import CONV_GEMM_TILES, CONV_TILES, K_STEP, StridePhase, choose_split_k, plan_conv_gemm, plan_stride_phases

__all__ = ["kernel_dir", "kernel_sources", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "CONV_TILES", "CONV_GEMM_TILES",
           "K_STEP", "StridePhase", "choose_split_k", "plan_conv_gemm", "plan_stride_phases"]
