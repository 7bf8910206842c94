"""Attention and glue kernels: Triton on CUDA, PyTorch SDPA elsewhere, a torch reference on request.

The model calls attention only through these two functions, so it never hard-codes an implementation.
"""

from terramind_openeo.kernels.attention import fused_attention, fused_cross_attention

__all__ = ["fused_attention", "fused_cross_attention"]
