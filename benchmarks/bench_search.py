"""Gallery search latency vs size: 10k / 100k / 1M x 512 float16 clustered synthetic embeddings,
flat (exact) vs ivfpq vs hnsw, a batch of 64 sketch-like queries, top-100.

Run: .venv/bin/pytest benchmarks/bench_search.py --benchmark-only
The timed call is `GalleryIndex.search(queries (64, 512), k=100)`. Approximate indexes get their
search parameter tuned for recall@100 >= 0.95 on 64 other queries first (as `splip-engine index
--eval-queries` does); extra_info records recall@100 against exact search on the timed queries,
the per-query latency inside the batch, single-query latency (p50 of 16), build time and memory.
HNSW stops at 100k: building its graph over 1M x 512 takes well over 10 minutes on 2 cores.
"""
import functools
import time

import numpy as np
import pytest

from splip_engine.index import GalleryIndex, recall_at_k, synthetic_embeddings, synthetic_queries, tune_search
from splip_engine.index.kinds import memory_bytes

DIM, CLUSTERS, K, BATCH = 512, 1000, 100, 64
HNSW_MAX = 100_000
CASES = [(n, kind) for n in (10_000, 100_000, 1_000_000) for kind in ("flat", "ivfpq", "hnsw")
         if kind != "hnsw" or n <= HNSW_MAX]


@functools.lru_cache(maxsize=1)  # CASES run size by size: one gallery (1 GB at 1M) at a time
def _gallery(n: int) -> tuple[np.ndarray, list[str]]:
    emb = synthetic_embeddings(n, DIM, CLUSTERS, dtype=np.float16)[0]  # (N, D) float16, as a store holds
    return emb, [f"photo{i}" for i in range(n)]


@functools.lru_cache(maxsize=1)
def _exact(n: int) -> tuple[GalleryIndex, float]:
    """The exact flat index of the size-n gallery, and its build time in seconds."""
    start = time.perf_counter()
    return GalleryIndex.build(*_gallery(n), "flat"), time.perf_counter() - start


def _queries() -> tuple[np.ndarray, np.ndarray]:
    """(tuning queries, timed queries), each (64, D) float32 sketch-like."""
    queries = synthetic_queries(2 * BATCH, DIM, CLUSTERS)[0]
    return queries[:BATCH], queries[BATCH:]


@pytest.mark.parametrize(("n", "kind"), CASES, ids=[f"{n // 1000}k-{kind}" for n, kind in CASES])
def test_search_latency(benchmark, n, kind):
    tune_queries, queries = _queries()
    exact, build_seconds = _exact(n)
    if kind != "flat":
        start = time.perf_counter()
        index = GalleryIndex.build(*_gallery(n), kind)
        build_seconds = time.perf_counter() - start
    else:
        index = exact
    tuned = tune_search(index, exact, tune_queries, K, target_recall=0.95)
    single = []
    for query in queries[:16]:
        t0 = time.perf_counter()
        index.search(query[None], K)
        single.append(time.perf_counter() - t0)

    rounds = 3 if n >= 1_000_000 and kind == "flat" else 10
    benchmark.pedantic(index.search, args=(queries, K), rounds=rounds, warmup_rounds=1, iterations=1)

    batch_ms = benchmark.stats.stats.median * 1000
    benchmark.extra_info.update({
        "n": n, "dim": DIM, "kind": kind, "batch": BATCH, "k": K,
        "params": {**index.info["params"], **tuned["params"]},
        "recall_at_100": recall_at_k(index, exact, queries, K),
        "batch_ms_median": batch_ms, "ms_per_query_in_batch": batch_ms / BATCH,
        "single_query_ms_p50": float(np.median(single) * 1000),
        "build_seconds": build_seconds,
        "memory_mb": memory_bytes(kind, n, DIM, index.info["params"]) / 2**20,
    })
