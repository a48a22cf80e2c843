"""Triton kernels for the GPU hot paths, each beside an eager PyTorch reference.

- attention: fused_attention, one-kernel softmax(q k^T / sqrt(Dh)) v (flash-attention style)
- similarity: similarity_topk, fused inner products + running top-k over a float16 gallery
- reference: attention_reference, similarity_topk_reference (float32 eager), their tolerances,
  attention_inputs (checks)
- _launch: when a kernel may run (CUDA, or TRITON_INTERPRET=1 on CPU) and lazy jitting

Kernels run on CUDA tensors, or on CPU under TRITON_INTERPRET=1 (Triton's interpreter, for
tests); anything else raises KernelUnavailableError rather than falling back silently.
"""
from ._launch import KernelUnavailableError
from .attention import fused_attention
from .reference import (
    ATTENTION_ATOL,
    SIMILARITY_ATOL,
    attention_inputs,
    attention_reference,
    similarity_topk_reference,
)
from .similarity import similarity_topk

__all__ = [
    "ATTENTION_ATOL",
    "SIMILARITY_ATOL",
    "KernelUnavailableError",
    "attention_inputs",
    "attention_reference",
    "fused_attention",
    "similarity_topk",
    "similarity_topk_reference",
]
