"""build_index / update_index: what `splip-engine index` does — index a store (optionally tune
and measure recall with held-out sketch queries) and save it, or bring a saved index up to date
with its store (add the store's new rows, drop the ids no longer in it) as the next version."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.index.gallery import INDEX_FILE, GalleryIndex, check_index_dir
from splip_engine.index.kinds import CAN_REMOVE, DEFAULT_MEMORY_BUDGET, IVF_REGROW_FACTOR
from splip_engine.index.recall import recall_at_k, tune_search
from splip_engine.index.store import ENGINE_HASH_KEY, Store


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
    out = Path(out)
    check_index_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        report["out"] = str(index.save(out))
    return report


def update_index(store: Store, index_dir: str | Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Bring the index saved in `index_dir` up to date with `store` and save it as the next version:
    add the store rows whose ids it lacks, drop its ids the store no longer has. In place where the
    kind allows (flat, ivfpq: add and remove; hnsw: add), else a full rebuild from the store with
    the same parameters (hnsw with removals; ivfpq grown past IVF_REGROW_FACTOR x its training size).

    Returns a report: kind, version, added, removed, count, rebuilt (the reason, or None), seconds;
    a store holding exactly the index's ids changes nothing (no new version).
    One update or build of a directory at a time (an advisory lock); readers are never blocked.
    """
    index_dir = Path(index_dir)
    start = time.perf_counter()
    if not (index_dir / INDEX_FILE).is_file():
        GalleryIndex.load(index_dir)  # raises its "not a gallery index" error, before any file is made
    with _locked(index_dir):
        index = GalleryIndex.load(index_dir)
        _check_same_engine(store, index, index_dir)
        in_index, in_store = set(index.ids), set(store.ids)
        new_rows = np.flatnonzero(np.fromiter((i not in in_index for i in store.ids), dtype=bool, count=store.count))
        removed = [i for i in index.ids if i not in in_store]
        changed = bool(len(new_rows) or removed)
        rebuilt = _rebuild_reason(index, len(new_rows), bool(removed)) if changed else None
        if rebuilt:
            log.info("rebuilding the %s index: %s", index.kind, rebuilt)
            fresh = GalleryIndex.build_from_store(store, index.kind, progress=progress, **_rebuild_params(index))
            fresh.info["version"] = index.version + 1
            index = fresh
        elif changed:
            index.remove(removed)
            index.add_from_store(store, new_rows, progress)
            index.info["version"] += 1
        if changed:
            index.save(index_dir)
    return {"kind": index.kind, "version": index.version, "added": len(new_rows), "removed": len(removed),
            "count": index.count, "rebuilt": rebuilt, "seconds": time.perf_counter() - start, "out": str(index_dir)}


@contextlib.contextmanager
def _locked(index_dir: Path) -> Iterator[None]:
    """Hold the index directory's writer lock: an advisory flock on the directory itself (no lock
    file among the index's files), released by the OS even if the process is killed."""
    fd = os.open(index_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise SpLIPError(f"index {index_dir} is being written by another process; wait for it to finish") from e
        yield
    finally:
        os.close(fd)


def _check_same_engine(store: Store, index: GalleryIndex, index_dir: Path) -> None:
    ours, theirs = index.info["engine"].get(ENGINE_HASH_KEY), store.engine.get(ENGINE_HASH_KEY)
    if store.dim != index.dim or (ours and theirs and ours != theirs):
        raise SpLIPError(f"store {store.path} (dim {store.dim}, engine {theirs}) was not embedded with the engine of "
                         f"index {index_dir} (dim {index.dim}, engine {ours}); build a new index from it with "
                         "`splip-engine index --store STORE --out NEW_DIR`")


def _rebuild_reason(index: GalleryIndex, n_new: int, removes: bool) -> str | None:
    """Why this update must rebuild the index rather than edit it, or None."""
    if removes and not CAN_REMOVE[index.kind]:
        return f"a {index.kind} index cannot remove ids in place"
    grown = index.count + n_new
    if index.kind == "ivfpq" and grown > IVF_REGROW_FACTOR * index.info["trained_count"]:
        return (f"the gallery grew to {grown:,} rows, over {IVF_REGROW_FACTOR:g}x the "
                f"{index.info['trained_count']:,} its quantizers were trained for")
    return None


def _rebuild_params(index: GalleryIndex) -> dict[str, Any]:
    """The old index's parameters for its rebuild; ivfpq re-derives its list count for the new size."""
    params = dict(index.info["params"])
    if index.kind == "ivfpq":
        params.pop("nlist")
    return params



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
