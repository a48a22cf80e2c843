"""Eager PyTorch references for the kernels, computed in float32, and `poisoned_empty`: what the
tests and the GPU suite check the Triton outputs with."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def poisoned_empty() -> Iterator[None]:
    """Inside this block torch.empty returns NaN-filled float and max-filled integer tensors, so a
    kernel that leaves part of its output unwritten fails its check instead of passing on stale
    memory (a previous run's identical result, say)."""
    empty = torch.empty

    def poisoned(*args, **kwargs) -> torch.Tensor:
        tensor = empty(*args, **kwargs)
        if tensor.is_floating_point():
            return tensor.fill_(float("nan"))
        return tensor.fill_(torch.iinfo(tensor.dtype).max) if tensor.dtype != torch.bool else tensor

    torch.empty = poisoned
    try:
        yield
    finally:
        torch.empty = empty
