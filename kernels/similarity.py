"""similarity_topk: exact top-k inner-product search, fused dot products + running top-k.

Stage 1 (Triton): each program takes BLOCK_Q queries and one chunk of gallery rows, computes the
scores of one BLOCK_G-row tile at a time in registers, and folds the tile into a running top-K
(K = k rounded up to a power of two) by a bitonic merge. Score and row travel together as one
int64 key: the float32 score's bits made order-preserving in the high word, the row in the low
word, so sorting keys sorts scores. Stage 2 (torch.topk) merges the chunks' K candidates per
query. The (Q, N) score matrix is never materialised: a query has at most max(K, ~N/4) candidates.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from splip_engine.errors import SpLIPError

from ._launch import check_launchable, dot_precision, lazy_jit, on_device

MAX_K = 1024
SIMILARITY_DTYPES = (torch.float16, torch.float32)
_MIN_TILES_PER_CHUNK = 4  # keeps the candidates at most ~1/4 of the gallery per query
_CANDIDATE_BYTES = 256 * 2**20  # queries are launched in slices whose candidates fit this
_LOW_WORD = 0xFFFFFFFF


class _Plan(NamedTuple):
    k_pad: int  # running top-K width, a power of two >= k
    block_q: int
    block_g: int
    block_d: int
    tiles_per_chunk: int
    n_chunks: int
    num_warps: int


def similarity_topk(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of queries (Q, D) float16/float32 against gallery (N, D) float16 (or float32),
    by inner product: scores (Q, k) float32 descending and gallery rows (Q, k) int64; k <= 1024."""
    _check_search(queries, gallery, k)
    check_launchable("similarity_topk", (queries, gallery))
    n_queries = queries.shape[0]
    if n_queries == 0:
        return queries.new_empty((0, k), dtype=torch.float32), queries.new_empty((0, k), dtype=torch.int64)
    plan = _plan(queries, gallery, k)
    per_query = plan.n_chunks * plan.k_pad * 8  # bytes of int64 candidates
    step = max(plan.block_q, _CANDIDATE_BYTES // per_query // plan.block_q * plan.block_q)
    results = [_search_slice(queries[start:start + step], gallery, k, plan) for start in range(0, n_queries, step)]
    scores, indices = zip(*results)
    return torch.cat(scores), torch.cat(indices)


def _check_search(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> None:
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise SpLIPError(
            f"similarity_topk: queries (Q, D) and gallery (N, D) must share D, got {tuple(queries.shape)} "
            f"and {tuple(gallery.shape)}"
        )
    for name, tensor in (("queries", queries), ("gallery", gallery)):
        if tensor.dtype not in SIMILARITY_DTYPES:
            raise SpLIPError(f"similarity_topk: {name} dtype {tensor.dtype}; use float16 or float32")
    if not 1 <= k <= min(MAX_K, gallery.shape[0]):
        raise SpLIPError(
            f"similarity_topk: k={k} must be in [1, min({MAX_K}, gallery rows={gallery.shape[0]})]"
        )


def _plan(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> _Plan:
    """Tile sizes (registers: about 8K scores per program; shared memory: a gallery tile of at
    most 32 KiB per pipeline stage) and chunks (about 4 programs per SM)."""
    k_pad = max(16, triton.next_power_of_2(k))
    block_g = max(k_pad, 128)  # the merge needs tiles at least as wide as the running top-K
    block_q = min(max(16, 8192 // block_g), 64, max(16, triton.next_power_of_2(queries.shape[0])))
    operand_bytes = 2 if _fp16_dot(queries, gallery) else 4
    block_d = min(max(16, 32768 // (block_g * operand_bytes)), 64, max(16, triton.next_power_of_2(queries.shape[1])))
    n_tiles = triton.cdiv(gallery.shape[0], block_g)
    q_blocks = triton.cdiv(queries.shape[0], block_q)
    programs = 4 * _multiprocessors(gallery.device)
    n_chunks = max(1, min(triton.cdiv(programs, q_blocks), n_tiles // _MIN_TILES_PER_CHUNK))
    tiles_per_chunk = triton.cdiv(n_tiles, n_chunks)
    num_warps = min(16, max(4, block_q * block_g // 1024))
    return _Plan(k_pad, block_q, block_g, block_d, tiles_per_chunk, triton.cdiv(n_tiles, tiles_per_chunk), num_warps)


def _search_slice(queries: torch.Tensor, gallery: torch.Tensor, k: int, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    candidates = torch.empty((queries.shape[0], plan.n_chunks * plan.k_pad), dtype=torch.int64, device=queries.device)
    grid = (triton.cdiv(queries.shape[0], plan.block_q), plan.n_chunks)
    with on_device(queries):
        _similarity_topk_kernel[grid](
            queries, gallery, candidates, queries.shape[0], gallery.shape[0], queries.shape[1],
            *queries.stride(), *gallery.stride(), candidates.stride(0), plan.tiles_per_chunk, _SENTINEL,
            BLOCK_Q=plan.block_q, BLOCK_G=plan.block_g, BLOCK_D=plan.block_d, K_PAD=plan.k_pad,
            FP16_DOT=_fp16_dot(queries, gallery), PRECISION=dot_precision(torch.float32),
            num_warps=plan.num_warps, num_stages=2,
        )
    keys = candidates.topk(k, dim=1).values  # (Q, k) int64, descending = by score
    return _unpack(keys)


def _fp16_dot(queries: torch.Tensor, gallery: torch.Tensor) -> bool:
    return queries.dtype == gallery.dtype == torch.float16


def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _pack(scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Host twin of the kernel's packing: float32 scores, int rows -> int64 keys ordered by score."""
    bits = scores.float().view(torch.int32)
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # flips negative floats' magnitude bits: int order = float order
    return (keys.long() << 32) | (rows.long() & _LOW_WORD)


def _unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 keys -> scores float32, rows int64 (the inverse of `_pack`)."""
    keys = (packed >> 32).to(torch.int32)
    scores = (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(torch.float32)
    return scores, packed & _LOW_WORD


_SENTINEL = int(_pack(torch.tensor([float("-inf")]), torch.tensor([-1]))[0])
"""The key of an empty slot (score -inf): below every real score."""


@lazy_jit
def _similarity_topk_kernel(
    queries_ptr, gallery_ptr, candidates_ptr, n_queries, n_gallery, dim,
    stride_q, stride_qd, stride_g, stride_gd, stride_c, tiles_per_chunk, sentinel,
    BLOCK_Q: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    FP16_DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows_q = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)  # (BLOCK_Q,)
    chunk = tl.program_id(1)
    dims = tl.arange(0, BLOCK_D)
    best = tl.zeros([BLOCK_Q, K_PAD], tl.int64) + sentinel  # running top-K keys, sorted descending
    first_row = chunk * tiles_per_chunk * BLOCK_G
    for tile in range(tiles_per_chunk):
        rows_g = first_row + tile * BLOCK_G + tl.arange(0, BLOCK_G)  # (BLOCK_G,)
        row_ok = rows_g < n_gallery
        scores = tl.zeros([BLOCK_Q, BLOCK_G], tl.float32)
        for start in range(0, dim, BLOCK_D):
            d = start + dims
            q = tl.load(queries_ptr + rows_q[:, None] * stride_q + d[None, :] * stride_qd,
                        mask=(rows_q[:, None] < n_queries) & (d[None, :] < dim), other=0.0)  # (BLOCK_Q, BLOCK_D)
            g = tl.load(gallery_ptr + rows_g[None, :].to(tl.int64) * stride_g + d[:, None] * stride_gd,
                        mask=row_ok[None, :] & (d[:, None] < dim), other=0.0)  # (BLOCK_D, BLOCK_G)
            if FP16_DOT:
                scores = tl.dot(q, g, scores)
            else:
                scores = tl.dot(q.to(tl.float32), g.to(tl.float32), scores, input_precision=PRECISION)
        bits = scores.to(tl.int32, bitcast=True)  # same packing as _pack on the host
        keys = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64) << 32) | rows_g[None, :].to(tl.int64)
        keys = tl.where(row_ok[None, :], keys, sentinel)  # (BLOCK_Q, BLOCK_G)
        tile_best = tl.topk(keys, K_PAD, dim=1)  # (BLOCK_Q, K_PAD) descending
        # max(descending, ascending) keeps the top K of both (a bitonic sequence); merge sorts it
        best = tl.bitonic_merge(tl.maximum(best, tl.flip(tile_best, 1)), 1, True)
    columns = chunk * K_PAD + tl.arange(0, K_PAD)
    tl.store(candidates_ptr + rows_q[:, None] * stride_c + columns[None, :], best, mask=rows_q[:, None] < n_queries)
