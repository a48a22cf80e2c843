"""Eager PyTorch references for the kernels, computed in float32: what the tests and the GPU
suite compare the Triton outputs against."""
from __future__ import annotations

import torch


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
