"""Blocked-GEMM exact search (index/exact.py): the same top-k as NumPy and as FAISS's fp16 scan,
across blocks, with ties and k beyond a block or the gallery; GalleryIndex uses it for batches."""
from __future__ import annotations

import numpy as np
import pytest

from splip_engine.index import GalleryIndex, exact, synthetic_embeddings, synthetic_queries

from .numpy_reference import numpy_topk


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(exact, "BLOCK_ROWS", 700)  # several blocks, the last one partial



@pytest.mark.parametrize("k", [1, 10, 900, 5000])
def test_blocked_search_equals_numpy_with_ties(small_blocks, k):
    gallery = synthetic_embeddings(3000, 32, 30, dtype=np.float16)[0]
    gallery[1500:1510] = gallery[5]  # exact duplicates: tied scores across blocks
    queries = synthetic_queries(9, 32, 30)[0]
    queries[0] = gallery[5]
    scores, rows = exact.BlockedExactSearch(gallery).search(queries, k)
    ref_scores, ref_rows = numpy_topk(queries, gallery, k)
    assert scores.shape == rows.shape == (9, min(k, 3000))
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)  # same fp32 products, other summation order
    tied = np.isclose(ref_scores[:, :, None], ref_scores[:, None, :], atol=1e-6).sum(-1) > 1  # (Q, k)
    assert (rows[~tied] == ref_rows[~tied]).all()
    assert list(rows[0, :11]) == [5, *range(1500, 1510)][:k]  # a tie goes to the lower row, as in FAISS


def test_gallery_index_batches_use_it_and_agree_with_the_faiss_scan(small_blocks):
    gallery = synthetic_embeddings(5000, 48, 50, dtype=np.float16)[0]
    index = GalleryIndex.build(gallery, [f"g{i}" for i in range(len(gallery))], "flat")
    queries = synthetic_queries(exact.MIN_QUERIES + 3, 48, 50)[0]
    blocked = index.search_positions(queries, 50)
    assert index._exact_cpu is not None
    scan = [index.search_positions(q[None], 50) for q in queries]  # one query: the FAISS scan
    np.testing.assert_allclose(blocked[0], np.concatenate([s for s, _ in scan]), atol=1e-6)
    np.testing.assert_array_equal(blocked[1], np.concatenate([r for _, r in scan]))


def test_k_beyond_the_gallery_is_padded_like_the_scan():
    gallery = synthetic_embeddings(20, 16, 4, dtype=np.float16)[0]
    index = GalleryIndex.build(gallery, [f"g{i}" for i in range(20)], "flat")
    scores, ids = index.search(synthetic_queries(exact.MIN_QUERIES, 16, 4)[0], 25)
    assert (ids[:, 20:] == None).all() and np.isneginf(scores[:, 20:]).all()  # noqa: E711
    assert all(set(row[:20]) == {f"g{i}" for i in range(20)} for row in ids)


def test_a_loaded_index_searches_its_own_codes(tmp_path):
    gallery = synthetic_embeddings(3000, 32, 10, dtype=np.float16)[0]
    index = GalleryIndex.build(gallery, [f"g{i}" for i in range(len(gallery))], "flat")
    queries = synthetic_queries(exact.MIN_QUERIES * 2, 32, 10)[0]
    loaded = GalleryIndex.load(index.save(tmp_path / "index"))
    expected = index.search(queries, 20)
    found = loaded.search(queries, 20)
    assert loaded._exact_cpu is not None  # the blocked path read the loaded FAISS index's codes
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])
