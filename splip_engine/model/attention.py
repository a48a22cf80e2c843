"""Transformer blocks run through one attention switch, reusing open_clip's block weights.

open_clip's `nn.MultiheadAttention` fast path neither exports to ONNX nor takes our kernels, so
the prompted towers call `block_forward`, which computes attention explicitly with the
implementation registered under `ATTENTION_IMPLS[name]` (`torch`: SDPA; `triton`: our kernel).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    from splip_engine.kernels import fused_attention

    return fused_attention(q, k, v, causal=causal)


ATTENTION_IMPLS: dict[str, AttentionFn] = {"torch": _sdpa, "triton": _triton}
"""(B, H, N, Dh) q, k, v -> (B, H, N, Dh); the registry behind `SpLIP.kernels`."""


def multihead_attention(mha: nn.MultiheadAttention, x: torch.Tensor, causal: bool, impl: str) -> torch.Tensor:
    """Self-attention of `mha`'s weights over x (B, N, D), computed by ATTENTION_IMPLS[impl]."""
    batch, seq, width = x.shape
    heads = mha.num_heads
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)  # (B, N, 3D)
    q, k, v = qkv.view(batch, seq, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
    out = ATTENTION_IMPLS[impl](q, k, v, causal)  # (B, H, N, Dh)
    out = out.transpose(1, 2).reshape(batch, seq, width)  # (B, N, D)
    return mha.out_proj(out)


def block_forward(block: nn.Module, x: torch.Tensor, causal: bool = False, impl: str = "torch") -> torch.Tensor:
    """open_clip ResidualAttentionBlock.forward, with attention through `multihead_attention`."""
    x = x + block.ls_1(multihead_attention(block.attn, block.ln_1(x), causal, impl))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
