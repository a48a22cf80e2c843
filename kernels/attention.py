"""fused_attention: softmax(q k^T / sqrt(Dh)) v in one Triton kernel, flash-attention style.

Each program owns BLOCK_M query rows of one (batch, head) and walks the keys in BLOCK_N tiles
with an online softmax (running max and sum in float32), so the (N, N) attention matrix never
reaches memory. Blocks are sized for this model's short sequences: the text tower's ~10 causal
tokens and the ViT-B/32 tower's 56 tokens fit one tile; ViT-B/16's 203 tokens take four.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from splip_engine.errors import SpLIPError

from ._launch import check_launchable, dot_precision, lazy_jit, on_device

ATTENTION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


class _Blocks(NamedTuple):
    m: int  # query rows per program
    n: int  # keys per tile
    d: int  # head dim, padded to a power of two
    num_warps: int


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Self-attention of q, k, v (B, H, N, Dh) float16 / bfloat16 / float32 (any strides) ->
    (B, H, N, Dh) in q's dtype, scale 1/sqrt(Dh) as in SDPA; `causal`: query i sees keys <= i.

    The result is a (B, H, N, Dh) view of (B, N, H, Dh) memory, so merging the heads afterwards
    (`out.transpose(1, 2).reshape(B, N, H * Dh)`) is free. Inference only (no backward).
    Under torch.compile it is the opaque op `splip_kernels::fused_attention` (dynamo does not
    trace the launch; inductor calls the kernel as is, and CUDA graphs capture it).
    """
    if torch.compiler.is_compiling():
        return torch.ops.splip_kernels.fused_attention(q, k, v, bool(causal))
    return _fused_attention(q, k, v, bool(causal))


@torch.library.custom_op("splip_kernels::fused_attention", mutates_args=())
def _fused_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return _fused_attention(q, k, v, causal)


@_fused_attention_op.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    batch, heads, seq, head_dim = q.shape
    return q.new_empty((batch, seq, heads, head_dim)).transpose(1, 2)


def _fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    _check_qkv(q, k, v)
    check_launchable("fused_attention", (q, k, v))
    batch, heads, seq, head_dim = q.shape
    out = torch.empty((batch, seq, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)
    if out.numel() == 0:
        return out
    blocks = _attention_blocks(seq, head_dim)
    grid = (batch * heads, triton.cdiv(seq, blocks.m))
    with on_device(q):
        _attention_kernel[grid](
            q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            heads, seq, head_dim ** -0.5 * math.log2(math.e),
            HEAD_DIM=head_dim, BLOCK_M=blocks.m, BLOCK_N=blocks.n, BLOCK_D=blocks.d, CAUSAL=bool(causal),
            PRECISION=dot_precision(q.dtype), num_warps=blocks.num_warps, num_stages=2,
        )
    return out


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        shapes = [tuple(t.shape) for t in (q, k, v)]
        raise SpLIPError(f"fused_attention: q, k, v must share one (B, H, N, Dh) shape, got {shapes}")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in ATTENTION_DTYPES:
        dtypes = [str(t.dtype) for t in (q, k, v)]
        raise SpLIPError(f"fused_attention: q, k, v dtypes {dtypes}; use one of {[str(d) for d in ATTENTION_DTYPES]}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise SpLIPError(f"fused_attention: head dim {q.shape[-1]} > {MAX_HEAD_DIM}; use kernels='torch'")


def _attention_blocks(seq: int, head_dim: int) -> _Blocks:
    """One tile for N <= 64 (our towers' usual case), 64 x 64 tiles with online softmax beyond."""
    block = min(64, max(16, triton.next_power_of_2(seq)))  # tl.dot needs >= 16
    block_d = max(16, triton.next_power_of_2(head_dim))
    num_warps = max(1, block // 16) * (2 if block_d >= 128 else 1)  # 16 -> 1, 32 -> 2, 64 -> 4 (8 for wide heads)
    return _Blocks(m=block, n=block, d=block_d, num_warps=min(num_warps, 8))


@lazy_jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    heads, seq, qk_scale,  # qk_scale = log2(e) / sqrt(Dh): the softmax runs in base 2
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
):
    batch = (tl.program_id(0) // heads).to(tl.int64)  # int64: batch offsets pass 2**31 at large B
    head = tl.program_id(0) % heads
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIM

    q_tile = q_ptr + batch * stride_qb + head * stride_qh
    q = tl.load(q_tile + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
                mask=(rows[:, None] < seq) & dim_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
    k_tile = k_ptr + batch * stride_kb + head * stride_kh
    v_tile = v_ptr + batch * stride_vb + head * stride_vh

    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_keys = seq
    if CAUSAL:  # tiles right of this block's diagonal are fully masked: skip them
        n_keys = tl.minimum(seq, tl.program_id(1) * BLOCK_M + BLOCK_M)
    for start in range(0, n_keys, BLOCK_N):
        keys = start + cols  # (BLOCK_N,)
        k_t = tl.load(k_tile + keys[None, :] * stride_kn + dims[:, None] * stride_kd,
                      mask=(keys[None, :] < seq) & dim_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
        scores = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N) float32
        visible = keys[None, :] < seq
        if CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None])
        # key 0 is visible to every row in the first tile, so row_max is finite from then on
        scores = tl.where(visible, scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        rescale = tl.exp2(row_max - new_max)  # (BLOCK_M,)
        probs = tl.exp2(scores - new_max[:, None])  # (BLOCK_M, BLOCK_N)
        row_sum = row_sum * rescale + tl.sum(probs, 1)
        v = tl.load(v_tile + keys[:, None] * stride_vn + dims[None, :] * stride_vd,
                    mask=(keys[:, None] < seq) & dim_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
        acc = acc * rescale[:, None] + tl.dot(probs.to(v.dtype), v, input_precision=PRECISION)
        row_max = new_max
    out = acc / row_sum[:, None]
    out_tile = out_ptr + batch * stride_ob + head * stride_oh
    tl.store(out_tile + rows[:, None] * stride_on + dims[None, :] * stride_od, out.to(out_ptr.dtype.element_ty),
             mask=(rows[:, None] < seq) & dim_ok[None, :])
