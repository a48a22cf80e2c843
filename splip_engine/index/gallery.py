"""GalleryIndex: top-k inner-product search over L2-normalised gallery embeddings on FAISS,
built from arrays or streamed from a store, saved atomically, and tied to the engine that made
the embeddings (so a sketch is never searched against photos embedded by another model).

Index directory layout:

    index.json               format_version, version, kind, metric, dim, count, params, engine, files
    index-<token>.faiss      the FAISS index
    ids-<token>.parquet      id (and path) per gallery row

`save` writes new token-named files beside the old ones, then replaces index.json atomically (the
commit), then deletes the files the new index.json no longer names (and the temp files a killed
save left): a save interrupted at any point leaves the previous index loadable.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splip_engine.errors import SpLIPError
from splip_engine.index import exact
from splip_engine.index.kinds import (
    DEFAULT_MEMORY_BUDGET,
    SEARCH_PARAMS,
    apply_search_params,
    choose_kind,
    create_index,
    remove_positions,
    resolve_params,
)
from splip_engine.index.store import ENGINE_HASH_KEY, Store
from splip_engine.io_utils import write_text_atomic, write_with_atomic
from splip_engine.optional import import_faiss

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
MAX_K = 10_000
EMBEDDING_DIM_KEY = "embedding_dim"  # the key of engine info / manifest holding the embedding dim
_MAX_RESULTS = 50_000_000  # Q * k bound: ~1 GB of scores, positions and ids
_SEARCH_BATCH = 4096  # queries per FAISS call
_ADD_CHUNK = 65536  # rows converted to float32 at a time while adding
_NORM_TOL = 1e-2  # float16 rounding moves a unit norm by < 1e-3; more means unnormalised input

log = logging.getLogger(__name__)


class _Rows:
    """Gallery rows to index, read in chunks: from an array or streamed from a store."""

    count: int
    dim: int

    def chunks(self) -> Iterator[np.ndarray]:
        """(n, D) float16/float32 pieces in row order."""
        raise NotImplementedError

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at sorted `positions`, (n, D)."""
        raise NotImplementedError


class _ArrayRows(_Rows):
    def __init__(self, embeddings: np.ndarray):
        self._array = embeddings  # (N, D)
        self.count, self.dim = embeddings.shape

    def chunks(self) -> Iterator[np.ndarray]:
        yield self._array

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self._array[positions]


class _StoreRows(_Rows):
    def __init__(self, store: Store):
        self._store = store
        self.count, self.dim = store.count, store.dim

    def chunks(self) -> Iterator[np.ndarray]:
        yield from self._store.shard_arrays()

    def take(self, positions: np.ndarray) -> np.ndarray:
        out, start = [], 0
        for shard in self._store.shard_arrays():  # memory-mapped: only the taken rows are read
            inside = positions[(positions >= start) & (positions < start + len(shard))]
            out.append(shard[inside - start])
            start += len(shard)
        return np.concatenate(out)


def _as_gallery_rows(chunk: np.ndarray, offset: int) -> np.ndarray:
    """(n, D) float32 copy of `chunk`, refused unless finite and L2-normalised (rows named from `offset`)."""
    rows = np.ascontiguousarray(chunk, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1)  # (n,), NaN for non-finite rows
    bad = np.flatnonzero(~(np.abs(norms - 1) <= _NORM_TOL))
    if len(bad):
        raise SpLIPError(f"gallery embedding row {offset + bad[0]} has norm {norms[bad[0]]:.4g}: the index needs "
                         "finite L2-normalised embeddings (the encoder's output)")
    return rows


def _check_ids(ids: Sequence[str], count: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=object).reshape(-1)  # (N,) object
    if len(ids) != count:
        raise SpLIPError(f"{count} embeddings but {len(ids)} ids: need one id per embedding")
    if not all(isinstance(i, str) for i in ids):
        raise SpLIPError("gallery ids must be str")
    if len(set(ids)) != count:
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise SpLIPError(f"gallery id {dup!r} appears more than once; ids must be unique")
    return ids


_CUDA_MAX_K = 1024
"""Largest k of splip_engine.kernels.similarity_topk (the CUDA flat search)."""


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise SpLIPError(f"k={k!r} must be an integer in [1, {MAX_K}]")
    return int(k)


class GalleryIndex:
    """Top-k search by inner product over a gallery; build with `build`/`build_from_store` or `load`."""

    def __init__(self, index: Any, ids: np.ndarray, info: dict[str, Any], paths: np.ndarray | None = None):
        self._index = index
        self._ids_or_none = np.append(ids, None)  # (N + 1,) object: position -1 reads the None sentinel
        self._paths = paths
        self._path_by_id: dict[str, str] | None = None
        self._gallery_cuda = None
        self._exact_cpu = None
        self.info = info

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def count(self) -> int:
        return int(self.info["count"])

    def __len__(self) -> int:
        return self.count

    @property
    def ids(self) -> np.ndarray:
        """(N,) object array of str, the id of each gallery row."""
        return self._ids_or_none[:-1]

    def path_of(self, id_: str) -> str | None:
        """The source path of gallery item `id_` when the index was built from a store, else None."""
        if self._paths is None:
            return None
        if self._path_by_id is None:
            self._path_by_id = dict(zip(self.ids, self._paths, strict=True))
        return self._path_by_id.get(id_)

    @classmethod
    def build(
        cls, embeddings: np.ndarray, ids: Sequence[str], kind: str = "auto", metric: str = "ip", *,
        paths: Sequence[str] | None = None, engine_info: Mapping[str, Any] | None = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET, **params: Any,
    ) -> GalleryIndex:
        """Index L2-normalised embeddings (N, D) float16/float32 under unique `ids`.

        kind: "flat" (exact), "ivfpq", "hnsw" or "auto" (see kinds.choose_kind); `params`
        override the kind's defaults (kinds._DEFAULTS), e.g. nprobe=64.
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.dtype.kind != "f":
            raise SpLIPError(f"embeddings must be a (N, D) float array, got {embeddings.dtype} {embeddings.shape}")
        return cls._build(_ArrayRows(embeddings), _check_ids(ids, len(embeddings)), paths, kind, metric,
                          dict(engine_info or {}), memory_budget_bytes, None, params)

    @classmethod
    def build_from_store(
        cls, store: Store, kind: str = "auto", *, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        progress: Callable[[int], None] | None = None, **params: Any,
    ) -> GalleryIndex:
        """Index every embedding of `store`, streaming its shards (no second full copy in memory);
        `progress(n)` is called after each n rows added. The store's engine info is kept."""
        return cls._build(_StoreRows(store), _check_ids(store.ids, store.count), store.paths, kind, "ip",
                          store.engine, memory_budget_bytes, progress, params)

    @classmethod
    def _build(
        cls, rows: _Rows, ids: np.ndarray, paths: Sequence[str] | None, kind: str, metric: str,
        engine: dict[str, Any], memory_budget_bytes: int, progress: Callable[[int], None] | None,
        params: dict[str, Any],
    ) -> GalleryIndex:
        if metric != "ip":
            raise SpLIPError(f"metric {metric!r} is not supported: embeddings are L2-normalised, use 'ip' (cosine)")
        if rows.count == 0:
            raise SpLIPError("cannot build an index over 0 embeddings; embed some gallery images first")
        if paths is not None and len(paths) != rows.count:
            raise SpLIPError(f"{rows.count} embeddings but {len(paths)} paths")
        if kind == "auto":
            if params:
                raise SpLIPError(f"index parameters {sorted(params)} need an explicit kind (flat, ivfpq, hnsw)")
            kind, params = choose_kind(rows.count, rows.dim, memory_budget_bytes)
            log.info("auto: %s for %d x %d embeddings", kind, rows.count, rows.dim)
        else:
            params = resolve_params(kind, rows.count, rows.dim, params)
        start = time.perf_counter()
        index = create_index(kind, rows.dim, params)
        if not index.is_trained:
            rng = np.random.default_rng(params["seed"])
            sample = np.sort(rng.choice(rows.count, size=min(rows.count, params["train_size"]), replace=False))
            index.train(_as_gallery_rows(rows.take(sample), 0))
            log.info("trained %s on %d vectors in %.1fs", kind, len(sample), time.perf_counter() - start)
        added = 0
        for chunk in rows.chunks():
            for piece in range(0, len(chunk), _ADD_CHUNK):
                part = _as_gallery_rows(chunk[piece:piece + _ADD_CHUNK], added)  # (n, D) float32
                index.add(part)
                added += len(part)
                if progress:
                    progress(len(part))
        apply_search_params(index, kind, params)
        log.info("built %s index of %d vectors in %.1fs", kind, added, time.perf_counter() - start)
        info = {"format_version": FORMAT_VERSION, "version": 1, "kind": kind, "metric": "ip", "dim": rows.dim,
                "count": rows.count, "trained_count": rows.count, "params": params, "engine": engine}
        return cls(index, ids, info, None if paths is None else np.asarray(paths, dtype=object))

    @property
    def version(self) -> int:
        """Which save of this gallery the index is (1 = built, +1 per update)."""
        return int(self.info["version"])

    def add(self, embeddings: np.ndarray, ids: Sequence[str], paths: Sequence[str] | None = None) -> None:
        """Append L2-normalised rows (n, D) under new unique `ids` (with `paths` when the index
        keeps paths) without retraining: an ivfpq index files them under its trained lists."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise SpLIPError(f"embeddings of shape {embeddings.shape}: this index holds (n, {self.dim})")
        new_ids = _check_ids(ids, len(embeddings))
        clash = set(new_ids) & set(self.ids)
        if clash:
            raise SpLIPError(f"gallery id {sorted(clash)[0]!r} is already in the index; remove it first")
        if (self._paths is None) != (paths is None) or (paths is not None and len(paths) != len(new_ids)):
            raise SpLIPError("pass one path per added row exactly when the index keeps paths (built from a store)")
        for start in range(0, len(embeddings), _ADD_CHUNK):
            self._index.add(_as_gallery_rows(embeddings[start:start + _ADD_CHUNK], self.count + start))
        kept_paths = None if paths is None else np.concatenate([self._paths, np.asarray(paths, dtype=object)])
        self._set_rows(np.concatenate([self.ids, new_ids]), kept_paths)

    def add_from_store(self, store: Store, rows: np.ndarray, progress: Callable[[int], None] | None = None) -> None:
        """`add` the store's rows at sorted positions `rows` (n,) int64, read a chunk at a time."""
        source, ids, paths = _StoreRows(store), store.ids, store.paths
        for start in range(0, len(rows), _ADD_CHUNK):
            chunk = rows[start:start + _ADD_CHUNK]
            self.add(source.take(chunk), ids[chunk], None if self._paths is None else paths[chunk])
            if progress:
                progress(len(chunk))

    def remove(self, ids: Sequence[str]) -> None:
        """Drop the rows of `ids` (each must be in the index); flat and ivfpq only (kinds.CAN_REMOVE)."""
        wanted = set(ids)
        gone = np.fromiter((i in wanted for i in self.ids), dtype=bool, count=self.count)  # (N,)
        if gone.sum() != len(wanted):
            missing = sorted(wanted - set(self.ids))
            raise SpLIPError(f"gallery id {missing[0]!r} is not in the index")
        if not gone.any():
            return
        remove_positions(self._index, self.kind, np.flatnonzero(gone).astype(np.int64))
        self._set_rows(self.ids[~gone], None if self._paths is None else self._paths[~gone])

    def _set_rows(self, ids: np.ndarray, paths: np.ndarray | None) -> None:
        """After add / remove: the row tables and count, and no cache of the old rows."""
        self._ids_or_none = np.append(ids, None)
        self._paths, self._path_by_id = paths, None
        self._gallery_cuda = self._exact_cpu = None
        self.info["count"] = len(ids)
        if self._index.ntotal != len(ids):
            raise SpLIPError(f"internal error: the FAISS index holds {self._index.ntotal} rows for {len(ids)} ids")

    def set_search_params(self, **params: Any) -> None:
        """Change search-time knobs (ivfpq: nprobe, k_factor; hnsw: ef_search); saved with the index."""
        allowed = SEARCH_PARAMS[self.kind]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise SpLIPError(f"{unknown} are not search parameters of a {self.kind} index; valid: {list(allowed)}")
        merged = resolve_params(self.kind, self.count, self.dim, {**self.info["params"], **params})
        apply_search_params(self._index, self.kind, merged)
        self.info["params"] = merged

    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.dtype.kind != "f":
            raise SpLIPError(f"queries must be a (Q, D) float array, got {queries.dtype} {queries.shape}"
                             + ("; pass one query as queries[None]" if queries.ndim == 1 else ""))
        if queries.shape[1] != self.dim:
            raise SpLIPError(f"queries have dim {queries.shape[1]} but the index holds dim {self.dim}: "
                             "embed queries with the engine that built the index")
        if not np.isfinite(queries).all():
            raise SpLIPError(f"query row {int(np.flatnonzero(~np.isfinite(queries).all(axis=1))[0])} is not finite")
        return np.ascontiguousarray(queries, dtype=np.float32)

    def search_positions(self, queries: np.ndarray, k: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query (Q, D): scores (Q, k) float32 descending and gallery rows (Q, k)
        int64; a slot with no result (k > N, or an IVF probe that found fewer) is -1 with score -inf."""
        queries, k = self._check_queries(queries), _check_k(k)
        if len(queries) * k > _MAX_RESULTS:
            raise SpLIPError(f"{len(queries)} queries x k={k} results is more than {_MAX_RESULTS}; "
                             "search in smaller batches")
        if device == "cuda" and k > _CUDA_MAX_K:  # beyond the fused kernel's k: FAISS on the CPU
            device = "cpu"
        if device == "cuda":
            return self._search_cuda(queries, k)
        if device != "cpu":
            raise SpLIPError(f"device {device!r} is not 'cpu' or 'cuda'")
        if self.kind == "flat" and len(queries) >= exact.MIN_QUERIES and exact.available():
            return self._search_blocked(queries, k)
        scores = np.empty((len(queries), k), dtype=np.float32)  # (Q, k)
        positions = np.empty((len(queries), k), dtype=np.int64)  # (Q, k)
        for start in range(0, len(queries), _SEARCH_BATCH):
            stop = start + _SEARCH_BATCH
            scores[start:stop], positions[start:stop] = self._index.search(queries[start:stop], k)
        scores[positions < 0] = -np.inf
        return scores, positions

    def _flat_gallery(self) -> np.ndarray:
        """The flat index's fp16 codes, which are the gallery itself, as an (N, D) float16 view."""
        codes = import_faiss().rev_swig_ptr(self._index.codes.data(), self.count * self.dim * 2)  # (N*D*2,) uint8
        return codes.view(np.float16).reshape(self.count, self.dim)

    def _search_blocked(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of a flat index by blocked GEMM (index/exact.py), -1 / -inf padded to k."""
        if self._exact_cpu is None:
            self._exact_cpu = exact.BlockedExactSearch(self._flat_gallery())
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)  # (Q, k)
        positions = np.full((len(queries), k), -1, dtype=np.int64)  # (Q, k)
        for start in range(0, len(queries), _SEARCH_BATCH):
            stop = start + _SEARCH_BATCH
            top_scores, top_rows = self._exact_cpu.search(queries[start:stop], k)
            scores[start:stop, :top_scores.shape[1]], positions[start:stop, :top_rows.shape[1]] = top_scores, top_rows
        return scores, positions

    def _search_cuda(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """CUDA hook: exact search of a flat index with the fused Triton similarity top-k kernel."""
        if self.kind != "flat":
            raise SpLIPError(f"device='cuda' searches flat indexes only (this one is {self.kind}); use device='cpu'")
        import torch

        if not torch.cuda.is_available():
            raise SpLIPError("device='cuda' but torch sees no CUDA device; use device='cpu'")
        from splip_engine.kernels import similarity_topk

        if self._gallery_cuda is None:
            self._gallery_cuda = torch.from_numpy(self._flat_gallery()).cuda()
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)  # (Q, k)
        positions = np.full((len(queries), k), -1, dtype=np.int64)  # (Q, k)
        found = min(k, self.count)
        top_scores, top_rows = similarity_topk(torch.from_numpy(queries).cuda(), self._gallery_cuda, found)
        scores[:, :found], positions[:, :found] = top_scores.cpu().numpy(), top_rows.cpu().numpy()
        return scores, positions

    def search(self, queries: np.ndarray, k: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query (Q, D): scores (Q, k) float32 descending and ids (Q, k) object;
        a slot with no result holds id None and score -inf. Q = 0 gives (0, k) arrays."""
        scores, positions = self.search_positions(queries, k, device)
        return scores, self._ids_or_none[positions]

    def check_compatible(self, engine_info: Mapping[str, Any]) -> None:
        """Refuse to serve this index with an engine whose embeddings it was not built from:
        compares the embedding dim and the engine hash where `engine_info` (a manifest) has them."""
        mine = {EMBEDDING_DIM_KEY: self.dim, ENGINE_HASH_KEY: self.info["engine"].get(ENGINE_HASH_KEY)}
        diff = [f"{key} {mine[key]!r} (index) != {engine_info[key]!r} (engine)" for key in mine
                if mine[key] is not None and engine_info.get(key) is not None and mine[key] != engine_info[key]]
        if diff:
            raise SpLIPError(f"the index was built with another engine: {', '.join(diff)}; re-embed the gallery "
                             "with this engine (`splip-engine embed`) and rebuild the index")

    def save(self, directory: str | Path) -> Path:
        """Write the index into `directory` atomically (see the module docstring); return it."""
        directory = Path(directory)
        check_index_dir(directory)
        token = secrets.token_hex(6)
        files = {"index": f"index-{token}.faiss", "ids": f"ids-{token}.parquet"}
        faiss = import_faiss()
        write_with_atomic(directory / files["index"], lambda tmp: faiss.write_index(self._index, str(tmp)))
        columns = {"id": pa.array(list(self.ids), pa.string())}
        if self._paths is not None:
            columns["path"] = pa.array(list(self._paths), pa.string())
        write_with_atomic(directory / files["ids"], lambda tmp: pq.write_table(pa.table(columns), str(tmp)))
        sizes = {name: (directory / f).stat().st_size for name, f in files.items()}
        write_text_atomic(directory / INDEX_FILE, json.dumps({**self.info, "files": files, "sizes": sizes}, indent=1))
        leftovers = [".index-*.tmp", ".ids-*.tmp", f".{INDEX_FILE}.*.tmp"]  # temp files of a killed save
        for stale in [*directory.glob("index-*.faiss"), *directory.glob("ids-*.parquet"),
                      *(p for pattern in leftovers for p in directory.glob(pattern))]:
            if stale.name not in files.values():
                stale.unlink()
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        """Load an index written by `save`; SpLIPError if missing, damaged or of a newer format."""
        directory = Path(directory)
        if not (directory / INDEX_FILE).is_file():
            raise SpLIPError(f"{directory} is not a gallery index (no {INDEX_FILE}); build one with "
                             "`splip-engine index --store STORE --out DIR`")
        try:
            info = json.loads((directory / INDEX_FILE).read_text())
            files, sizes, version = info.pop("files"), info.pop("sizes"), int(info["format_version"])
            kind, dim, count = info["kind"], int(info["dim"]), int(info["count"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise _damaged(directory, f"{INDEX_FILE} is unreadable ({e})") from e
        if version > FORMAT_VERSION:
            raise SpLIPError(f"index {directory} has format {version}, newer than this splip-engine reads "
                             f"({FORMAT_VERSION}); upgrade splip-engine")
        for name, file in files.items():
            path = directory / file
            if not path.is_file() or path.stat().st_size != sizes[name]:
                raise _damaged(directory, f"{file} is missing or not the size {INDEX_FILE} records")
        faiss = import_faiss()
        try:
            index = faiss.read_index(str(directory / files["index"]))
            table = pq.read_table(directory / files["ids"])
        except (RuntimeError, OSError, pa.ArrowException) as e:
            raise _damaged(directory, f"its files are unreadable ({e})") from e
        if index.ntotal != count or index.d != dim or table.num_rows != count:
            raise _damaged(directory, f"it holds {index.ntotal} x {index.d} vectors and {table.num_rows} ids, "
                                      f"{INDEX_FILE} says {count} x {dim}")
        apply_search_params(index, kind, info["params"])
        info.setdefault("version", 1)  # indexes saved before versions were counted
        info.setdefault("trained_count", count)
        paths = _strings(table, "path") if "path" in table.column_names else None
        return cls(index, _strings(table, "id"), info, paths)


def check_index_dir(directory: Path) -> None:
    """Refuse to write an index into a directory holding anything else (dotfiles aside)."""
    if directory.exists() and not (directory / INDEX_FILE).is_file() and any(
            not p.name.startswith(".") for p in directory.iterdir()):
        raise SpLIPError(f"{directory} exists and is not a gallery index; choose a new --out")


def _strings(table: pa.Table, column: str) -> np.ndarray:
    """(N,) object array of str from a parquet string column."""
    return table.column(column).to_numpy(zero_copy_only=False).astype(object)


def _damaged(directory: Path, what: str) -> SpLIPError:
    return SpLIPError(f"index {directory} is damaged: {what}; rebuild it with `splip-engine index`")
