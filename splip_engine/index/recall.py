"""Recall of an approximate GalleryIndex against exact flat search on the same gallery, and the
search-parameter tuning that reaches a target recall (ENGINE.md: measured with sketch queries)."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.index.gallery import GalleryIndex

log = logging.getLogger(__name__)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Fraction of the exact (Q, k) result rows (-1 = none) found in the approximate (Q, k) ones."""
    hits = sum(int(np.isin(e[e >= 0], a[a >= 0]).sum()) for a, e in zip(approx, exact, strict=True))
    return hits / max(1, int((exact >= 0).sum()))


def _exact_positions(index: GalleryIndex, exact_index: GalleryIndex, queries: np.ndarray, k: int) -> np.ndarray:
    if exact_index.kind != "flat":
        raise SpLIPError(f"recall is measured against an exact flat index, not {exact_index.kind}")
    if len(index) != len(exact_index) or not np.array_equal(index.ids, exact_index.ids):
        raise SpLIPError("the two indexes hold different galleries; build both from the same embeddings")
    if len(queries) == 0:
        raise SpLIPError("recall needs at least one query")
    return exact_index.search_positions(queries, k)[1]  # (Q, k) int64


def recall_at_k(index: GalleryIndex, exact_index: GalleryIndex, queries: np.ndarray, k: int) -> float:
    """recall@k: the mean share of each query's exact top-k (from a flat `exact_index` over the same
    gallery) that `index` returns in its own top-k; in [0, 1]."""
    exact = _exact_positions(index, exact_index, queries, k)
    return _recall(index.search_positions(queries, k)[1], exact)


def tune_search(
    index: GalleryIndex, exact_index: GalleryIndex, queries: np.ndarray, k: int = 100,
    target_recall: float = 0.95,
) -> dict[str, Any]:
    """Set the cheapest search parameters whose recall@k on `queries` reaches `target_recall`, or
    the largest tried when none does (logged). ivfpq: first the re-ranking depth k_factor (with
    every list probed), then nprobe; hnsw: ef_search.

    Returns {"params": the search parameters set, "recall": recall@k they reach on `queries`}.
    """
    if index.kind == "flat":
        return {"params": {}, "recall": 1.0}
    exact = _exact_positions(index, exact_index, queries, k)
    chosen: dict[str, int] = {}

    def first_reaching(name: str, values: list[int], **fixed: int) -> float:
        for value in values:
            index.set_search_params(**chosen, **fixed, **{name: value})
            recall = _recall(index.search_positions(queries, k)[1], exact)
            log.info("%s=%d %s: recall@%d %.4f", name, value, fixed or "", k, recall)
            if recall >= target_recall:
                break
        else:
            log.warning("recall@%d %.3f is below the target %.3f even at %s=%d", k, recall, target_recall, name, value)
        chosen[name] = value
        return recall

    params = index.info["params"]
    if index.kind == "ivfpq":
        nlist = params["nlist"]
        if params["refine"]:
            first_reaching("k_factor", [4, 8, 16, 32, 64], nprobe=nlist)
        recall = first_reaching("nprobe", sorted({min(2**i, nlist) for i in range(nlist.bit_length() + 1)}))
    else:
        recall = first_reaching("ef_search", [k * 2**i for i in range(5)])
    return {"params": chosen, "recall": recall}
