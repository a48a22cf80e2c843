"""Eager PyTorch references for the kernels, computed in float32, the tolerances the kernels are
held to, and their inputs as the model makes them: what the tests and the GPU suite
(benchmarks/gpu_suite.py) check the Triton outputs with, one definition for both."""
from __future__ import annotations

import torch

ATTENTION_ATOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
"""fused_attention vs attention_reference, per dtype: float32 differs only by summation order and
exp2 vs exp; float16 / bfloat16 round the output and the probabilities fed to P @ V to 11 / 8
significant bits."""
SIMILARITY_ATOL = 1e-4
"""similarity_topk scores vs the float32 reference: identical float32 products (float16 ones are
exact in float32), only the summation order differs."""


def attention_inputs(batch: int, heads: int, seq: int, head_dim: int, dtype: torch.dtype, device: str | torch.device,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q, k, v (B, H, N, Dh) as the model makes them: strided views of one (B, N, 3, H, Dh)
    tensor (drawn on `device` with its own generator, so large GPU cases need no host copy)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    qkv = torch.randn(batch, seq, 3, heads, head_dim, generator=gen, device=device).to(dtype)
    return tuple(qkv.permute(2, 0, 3, 1, 4))


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) [+ causal mask]) v for (B, H, N, Dh) inputs, in float32 with the
    (N, N) matrix materialised; returned in q's dtype."""
    seq = q.shape[-2]
    scores = q.float() @ k.float().transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, H, N, N) float32
    if causal:
        visible = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()  # key j <= query i
        scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


def similarity_topk_reference(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products by the full (Q, N) float32 score matrix: scores (Q, k) float32,
    descending, and gallery rows (Q, k) int64."""
    scores, indices = (queries.float() @ gallery.float().T).topk(k, dim=1)
    return scores, indices
