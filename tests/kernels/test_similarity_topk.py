"""similarity_topk against the full-matrix reference: scores, indices by score, chunking, errors."""
from __future__ import annotations

import pytest
import torch

from poison import poisoned_empty

from splip_engine.errors import SpLIPError
from splip_engine.kernels import (
    SIMILARITY_ATOL,
    KernelUnavailableError,
    similarity_topk,
    similarity_topk_reference,
)
from splip_engine.kernels import similarity as similarity_module

ATOL = SIMILARITY_ATOL  # shared with benchmarks/gpu_suite.py (reason in kernels/reference.py)


def _data(n_queries: int, n_gallery: int, dim: int, query_dtype: torch.dtype, gallery_dtype: torch.dtype, device: str):
    gen = torch.Generator().manual_seed(n_gallery + dim)
    queries = torch.randn(n_queries, dim, generator=gen).to(device=device, dtype=query_dtype)
    gallery = torch.randn(n_gallery, dim, generator=gen).to(device=device, dtype=gallery_dtype)
    return queries, gallery


def _check(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> None:
    """Ties may order differently, so indices are checked by the scores they point at."""
    with poisoned_empty():  # an unwritten candidate slot would win the final top-k
        scores, indices = similarity_topk(queries, gallery, k)
    expected_scores, _ = similarity_topk_reference(queries, gallery, k)
    assert scores.shape == indices.shape == (queries.shape[0], k)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    torch.testing.assert_close(scores, expected_scores, atol=ATOL, rtol=0)
    full = queries.float() @ gallery.float().T  # (Q, N): the reference's matrix, for the check only
    assert int(indices.min()) >= 0 and int(indices.max()) < gallery.shape[0]
    torch.testing.assert_close(full.gather(1, indices), scores, atol=ATOL, rtol=0)
    assert all(len(set(row.tolist())) == k for row in indices)  # no row returned twice


DTYPES = [(torch.float16, torch.float16), (torch.float32, torch.float16), (torch.float32, torch.float32)]


# (Q, N, D, k): k not a power of two over odd D, and k = 1 over more queries than one block
@pytest.mark.parametrize(("query_dtype", "gallery_dtype"), DTYPES)
@pytest.mark.parametrize(("n_queries", "n_gallery", "dim", "k"), [(3, 700, 33, 100), (17, 300, 16, 1)])
def test_matches_reference(n_queries, n_gallery, dim, k, query_dtype, gallery_dtype, device):
    _check(*_data(n_queries, n_gallery, dim, query_dtype, gallery_dtype, device), k)


def test_several_chunks_of_several_tiles_match_reference(device):
    queries, gallery = _data(5, 1200, 48, torch.float16, torch.float16, device)
    plan = similarity_module._plan(queries, gallery, 10)
    assert plan.n_chunks > 1 and plan.tiles_per_chunk > 1  # both merge stages run
    _check(queries, gallery, 10)


def test_max_k_1024_over_two_tiles_matches_reference(device):
    _check(*_data(2, 1100, 16, torch.float16, torch.float16, device), 1024)


def test_ties_are_resolved_by_score(device):
    queries, gallery = _data(4, 300, 16, torch.float16, torch.float16, device)
    gallery = torch.cat([gallery, gallery, gallery[:50]])  # every score appears two or three times
    _check(queries, gallery, 64)


def test_query_slices_give_the_same_results(monkeypatch, device):
    queries, gallery = _data(40, 600, 16, torch.float16, torch.float16, device)
    whole = similarity_topk(queries, gallery, 20)
    monkeypatch.setattr(similarity_module, "_CANDIDATE_BYTES", 1)  # one BLOCK_Q slice per launch
    sliced = similarity_topk(queries, gallery, 20)
    torch.testing.assert_close(sliced[0], whole[0], atol=0, rtol=0)
    torch.testing.assert_close(sliced[1], whole[1], atol=0, rtol=0)  # the same rows, not just equal scores


def test_candidates_stay_a_fraction_of_the_score_matrix():
    queries = torch.empty(64, 512, dtype=torch.float16, device="meta")
    gallery = torch.empty(1_000_000, 512, dtype=torch.float16, device="meta")
    for k in (10, 100, 1024):
        plan = similarity_module._plan(queries, gallery, k)
        assert plan.n_chunks * plan.k_pad <= gallery.shape[0] // 4


def test_empty_query_batch_returns_empty(device):
    queries, gallery = _data(0, 100, 16, torch.float16, torch.float16, device)
    scores, indices = similarity_topk(queries, gallery, 5)
    assert scores.shape == indices.shape == (0, 5)


def test_cpu_tensors_without_interpreter_raise_instead_of_falling_back(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    queries, gallery = _data(2, 100, 16, torch.float16, torch.float16, "cpu")
    with pytest.raises(KernelUnavailableError, match="need CUDA tensors"):
        similarity_topk(queries, gallery, 5)


@pytest.mark.parametrize(
    ("query_shape", "gallery_shape", "gallery_dtype", "k", "match"),
    [
        ((2, 16), (100, 8), torch.float16, 5, "must share D"),
        ((16,), (100, 16), torch.float16, 5, "must share D"),
        ((2, 16), (100, 16), torch.bfloat16, 5, "gallery dtype torch.bfloat16"),
        ((2, 16), (100, 16), torch.float16, 0, "k=0"),
        ((2, 16), (100, 16), torch.float16, 101, r"k=101 .*gallery rows=100"),
        ((2, 16), (2000, 16), torch.float16, 1025, "k=1025"),
    ],
)
def test_bad_inputs_are_named(query_shape, gallery_shape, gallery_dtype, k, match):
    with pytest.raises(SpLIPError, match=match):
        similarity_topk(torch.zeros(query_shape), torch.zeros(gallery_shape, dtype=gallery_dtype), k)
