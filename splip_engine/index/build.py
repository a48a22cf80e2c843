"""build_index: what `splip-engine index` does — index a store, optionally tune and measure
recall with held-out sketch queries, save the index."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.index.gallery import GalleryIndex
from splip_engine.index.kinds import DEFAULT_MEMORY_BUDGET
from splip_engine.index.recall import recall_at_k, tune_search
from splip_engine.index.store import Store

log = logging.getLogger(__name__)


def load_queries(path: str | Path) -> np.ndarray:
    """Query embeddings (Q, D) float32 from a .npy file; SpLIPError if unreadable or not 2-D float."""
    try:
        queries = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SpLIPError(f"cannot read query embeddings from {path} ({e}); pass a .npy of shape (Q, D)") from e
    if queries.ndim != 2 or queries.dtype.kind != "f" or len(queries) == 0:
        raise SpLIPError(f"{path} holds {queries.dtype} {queries.shape}; need a non-empty (Q, D) float array")
    return queries.astype(np.float32)


def build_index(
    store: Store, out: str | Path, kind: str = "auto", *, eval_queries: np.ndarray | None = None,
    k: int = 100, target_recall: float = 0.95, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Build a `kind` index over `store` and save it to `out`; return a report (kind, count, dim,
    params, build_seconds, and with `eval_queries` the recall@k against exact flat search).

    With eval_queries, an approximate index's search parameter is tuned for `target_recall` on
    the even-numbered queries and recall is reported on the odd-numbered ones (held out).
    """
    if eval_queries is not None and (eval_queries.ndim != 2 or eval_queries.shape[1] != store.dim):
        raise SpLIPError(f"eval queries have shape {eval_queries.shape}, the store holds dim {store.dim}")
    start = time.perf_counter()
    index = GalleryIndex.build_from_store(store, kind, memory_budget_bytes=memory_budget_bytes, progress=progress)
    report: dict[str, Any] = {"kind": index.kind, "count": index.count, "dim": index.dim,
                              "build_seconds": time.perf_counter() - start}
    if eval_queries is not None:
        report.update(_evaluate(index, store, eval_queries, k, target_recall))
    report["params"] = index.info["params"]
    report["out"] = str(index.save(out))
    return report


def _evaluate(index: GalleryIndex, store: Store, queries: np.ndarray, k: int, target: float) -> dict[str, Any]:
    """Tune on half the queries, measure recall@k on the other half (on all when fewer than 2)."""
    if index.kind == "flat":
        return {"recall": 1.0, "recall_queries": len(queries), "k": k}  # exact by construction
    log.info("building the exact flat index that recall is measured against")
    exact = GalleryIndex.build_from_store(store, "flat")
    tune, held_out = (queries[0::2], queries[1::2]) if len(queries) >= 2 else (queries, queries)
    tuned = tune_search(index, exact, tune, k, target)
    return {"recall": recall_at_k(index, exact, held_out, k), "recall_queries": len(held_out), "k": k,
            "tuned": tuned["params"], "target_recall": target}
