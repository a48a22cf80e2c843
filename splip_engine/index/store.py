"""The embedding store that `splip-engine embed` writes and `splip-engine index` reads: float16
shards + a parquet id table, committed atomically so a killed job resumes with no lost and no
duplicated rows.

Layout of a store directory:

    store.json                 the commit record: format_version, dim, dtype, modality, engine info,
                               counts and the committed shards (a shard or error not listed here
                               does not exist)
    shards/emb-00000.npy       (n, D) float16 embeddings of shard 0
    shards/meta-00000.parquet  id: string, path: string, shard: int32, row: int32
    errors.jsonl               one {"path", "reason"} per skipped input (its first
                               counts["errors"] lines are committed)

Commit protocol: a shard's two files are written atomically (temp + rename), then errors.jsonl,
then store.json; rewriting store.json is the single atomic step that makes them part of the store.
A process killed at any instant leaves either the old or the new store.json; files it wrote
beyond the commit are ignored by readers and deleted when a writer reopens the store. One writer
at a time (an advisory lock, released by the OS even on SIGKILL).

Resume: `StoreWriter.done_ids()` (stored ids) and `StoreWriter.error_paths()` (inputs recorded as
errors) are both done. Errors are not retried by default, since a file that failed to decode
fails again on every resume; pass `retry_errors=True` to drop them and try those inputs again.
"""
from __future__ import annotations

import fcntl
import functools
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splip_engine.errors import DiskWriteError, SpLIPError
from splip_engine.io_utils import write_text_atomic, write_with_atomic

FORMAT_VERSION = 1
STORE_FILE = "store.json"
ERRORS_FILE = "errors.jsonl"
SHARDS_DIR = "shards"
LOCK_FILE = ".lock"
ENGINE_HASH_KEY = "engine_hash"  # the key of engine_info that identifies the encoder
DEFAULT_SHARD_SIZE = 16384  # rows per shard: 16 MiB at D=512, the most work a crash can lose
MODALITIES = ("sketch", "photo")

_SHARD_FILE = re.compile(r"^(emb|meta)-(\d{5,})\.(npy|parquet)$")
_META_SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()), ("shard", pa.int32()), ("row", pa.int32())])

log = logging.getLogger(__name__)


def _emb_file(root: Path, shard: int) -> Path:
    return root / SHARDS_DIR / f"emb-{shard:05d}.npy"


def _meta_file(root: Path, shard: int) -> Path:
    return root / SHARDS_DIR / f"meta-{shard:05d}.parquet"


def _damaged(root: Path, what: str) -> SpLIPError:
    return SpLIPError(f"store {root} is damaged: {what}; re-run `splip-engine embed` with a new --out")


def _read_info(root: Path) -> dict[str, Any]:
    """store.json of `root`, checked for the fields and format this version reads."""
    path = root / STORE_FILE
    if not path.is_file():
        raise SpLIPError(f"{root} is not an embedding store (no {STORE_FILE}); write one with `splip-engine embed`")
    try:
        info = json.loads(path.read_text())
        version, dim, shards = int(info["format_version"]), int(info["dim"]), info["shards"]
    except (ValueError, KeyError, TypeError) as e:
        raise _damaged(root, f"{STORE_FILE} is unreadable ({e})") from e
    if version > FORMAT_VERSION:
        raise SpLIPError(f"store {root} has format {version}, newer than this splip-engine reads "
                         f"({FORMAT_VERSION}); upgrade splip-engine")
    if dim <= 0 or any(int(s["rows"]) <= 0 for s in shards):
        raise _damaged(root, f"{STORE_FILE} lists dim={dim} or an empty shard")
    return info


def _read_errors(root: Path, count: int) -> list[dict[str, str]]:
    """The first `count` (committed) lines of errors.jsonl."""
    if count == 0:
        return []
    try:
        with open(root / ERRORS_FILE, encoding="utf-8") as f:
            errors = [json.loads(line) for line in itertools.islice(f, count)]
    except (OSError, ValueError) as e:
        raise _damaged(root, f"{ERRORS_FILE} is unreadable ({e})") from e
    if len(errors) < count:
        raise _damaged(root, f"{ERRORS_FILE} has {len(errors)} lines, {STORE_FILE} committed {count}")
    return errors


class Store:
    """A committed store opened for reading (see `open_store`); shards are memory-mapped."""

    def __init__(self, root: Path, info: dict[str, Any]):
        self.path = root
        self.info = info
        self._shards = info["shards"]
        self._meta: pa.Table | None = None
        for shard, entry in enumerate(self._shards):
            self._check_shard(shard, int(entry["rows"]))

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def count(self) -> int:
        return sum(int(s["rows"]) for s in self._shards)

    @property
    def modality(self) -> str:
        return self.info["modality"]

    @property
    def engine(self) -> dict[str, Any]:
        return dict(self.info.get("engine", {}))

    def _check_shard(self, shard: int, rows: int) -> None:
        try:
            shape = self._load_shard(shard).shape
            meta_rows = pq.read_metadata(_meta_file(self.path, shard)).num_rows
        except (OSError, ValueError, pa.ArrowException) as e:
            raise _damaged(self.path, f"shard {shard} is unreadable ({e})") from e
        if shape != (rows, self.dim) or meta_rows != rows:
            raise _damaged(self.path, f"shard {shard} holds {shape} embeddings and {meta_rows} ids, "
                                      f"{STORE_FILE} says ({rows}, {self.dim})")

    def _load_shard(self, shard: int) -> np.ndarray:
        emb = np.load(_emb_file(self.path, shard), mmap_mode="r", allow_pickle=False)  # (n, D) float16
        if emb.dtype != np.float16:
            raise _damaged(self.path, f"shard {shard} has dtype {emb.dtype}, not float16")
        return emb

    def _table(self) -> pa.Table:
        if self._meta is None:
            tables = [pq.read_table(_meta_file(self.path, s), schema=_META_SCHEMA) for s in range(len(self._shards))]
            self._meta = pa.concat_tables(tables) if tables else _META_SCHEMA.empty_table()
        return self._meta

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """(N,) object array of str, in row order."""
        return self._table().column("id").to_numpy(zero_copy_only=False).astype(object)

    @functools.cached_property
    def paths(self) -> np.ndarray:
        """(N,) object array of str: the input each row was embedded from."""
        return self._table().column("path").to_numpy(zero_copy_only=False).astype(object)

    def shard_arrays(self) -> Iterator[np.ndarray]:
        """Memory-mapped (n, D) float16 arrays of the shards, in row order."""
        for shard in range(len(self._shards)):
            yield self._load_shard(shard)

    def iter_shards(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (embeddings (n, D) float16 memory-mapped, ids (n,) object) shard by shard."""
        for shard, emb in enumerate(self.shard_arrays()):
            ids = pq.read_table(_meta_file(self.path, shard), columns=["id"]).column("id")
            yield emb, ids.to_numpy(zero_copy_only=False).astype(object)

    def embeddings(self, dtype: np.dtype = np.float16) -> np.ndarray:
        """All embeddings (N, D) in `dtype`, concatenated (one copy in memory)."""
        out = np.empty((self.count, self.dim), dtype=dtype)
        start = 0
        for emb in self.shard_arrays():
            out[start:start + len(emb)] = emb
            start += len(emb)
        return out

    def errors(self) -> list[dict[str, str]]:
        """The skipped inputs: [{"path": ..., "reason": ...}] in the order they were recorded."""
        return _read_errors(self.path, int(self.info["counts"]["errors"]))


def open_store(path: str | Path) -> Store:
    """Open the committed part of the store at `path` for reading; SpLIPError if missing or damaged."""
    root = Path(path)
    return Store(root, _read_info(root))


class StoreWriter:
    """Appends embeddings to a store in atomically committed shards; reopening resumes it.

    Use as a context manager (or call `close()`): leaving flushes the last partial shard.
    """

    def __init__(
        self, path: str | Path, dim: int, modality: str, engine_info: Mapping[str, Any],
        shard_size: int = DEFAULT_SHARD_SIZE, retry_errors: bool = False,
    ):
        if modality not in MODALITIES:
            raise SpLIPError(f"modality {modality!r} is not one of {MODALITIES}")
        if dim <= 0 or shard_size <= 0:
            raise SpLIPError(f"dim ({dim}) and shard_size ({shard_size}) must be positive")
        self.path = Path(path)
        self.dim, self.modality, self.shard_size = int(dim), modality, int(shard_size)
        self._engine = dict(engine_info)
        self._lock = self._acquire_lock()
        try:
            self._open_or_create(retry_errors)
        except BaseException:
            self._lock.close()
            raise
        self._pending: list[tuple[np.ndarray, list[str], list[str]]] = []  # (emb (n, D) float16, ids, paths)
        self._pending_rows = 0
        self._pending_errors: list[dict[str, str]] = []
        self._error_paths = {e["path"] for e in self._errors}
        self._closed = False

    def _acquire_lock(self):
        self.path.mkdir(parents=True, exist_ok=True)
        lock = open(self.path / LOCK_FILE, "a")  # noqa: SIM115 -- held open (locked) until close()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            lock.close()
            raise SpLIPError(f"store {self.path} is being written by another process; "
                             "wait for it or use a new --out") from e
        return lock

    def _open_or_create(self, retry_errors: bool) -> None:
        if not (self.path / STORE_FILE).is_file():
            others = [p.name for p in self.path.iterdir() if not p.name.startswith(".")]
            if others:
                raise SpLIPError(f"{self.path} exists and is not an embedding store (holds {others[:3]}); "
                                 "use a new --out")
            self._info = {
                "format_version": FORMAT_VERSION, "dim": self.dim, "dtype": "float16",
                "modality": self.modality, "engine": self._engine,
                "counts": {"rows": 0, "shards": 0, "errors": 0}, "shards": [],
            }
            self._errors: list[dict[str, str]] = []
            self._ids: set[str] = set()
            self._remove_leftovers()
            write_text_atomic(self.path / STORE_FILE, json.dumps(self._info, indent=1))
            return
        store = open_store(self.path)
        self._check_same_engine(store.info)
        self._info = store.info
        self._errors = [] if retry_errors else store.errors()
        self._ids = set(store.ids)
        self._remove_leftovers()
        log.info("resuming store %s: %d rows in %d shards, %d errors", self.path, store.count,
                 len(self._info["shards"]), len(self._errors))

    def _check_same_engine(self, info: dict[str, Any]) -> None:
        theirs = {"dim": info["dim"], "modality": info.get("modality"),
                  ENGINE_HASH_KEY: info.get("engine", {}).get(ENGINE_HASH_KEY)}
        ours = {"dim": self.dim, "modality": self.modality, ENGINE_HASH_KEY: self._engine.get(ENGINE_HASH_KEY)}
        diff = [f"{k} {theirs[k]!r} != {ours[k]!r}" for k in ours if theirs[k] != ours[k]]
        if diff:
            raise SpLIPError(f"store {self.path} was written by another engine: {', '.join(diff)}; "
                             "use a new --out")

    def _remove_leftovers(self) -> None:
        """Delete files a killed writer left beyond the last commit (only names this module writes)."""
        committed = len(self._info["shards"])
        for folder in (self.path, self.path / SHARDS_DIR):
            for p in folder.glob(".*.tmp") if folder.is_dir() else ():
                p.unlink()
        for p in (self.path / SHARDS_DIR).glob("*") if (self.path / SHARDS_DIR).is_dir() else ():
            match = _SHARD_FILE.match(p.name)
            if match and int(match.group(2)) >= committed:
                log.info("removing uncommitted %s", p)
                p.unlink()

    def done_ids(self) -> set[str]:
        """Ids stored (committed or buffered): a resumed job skips them."""
        return set(self._ids)

    def error_paths(self) -> set[str]:
        """Paths recorded as errors (committed or buffered): a resumed job skips them too."""
        return set(self._error_paths)

    @property
    def count(self) -> int:
        """Rows stored so far, buffered ones included."""
        return int(self._info["counts"]["rows"]) + self._pending_rows

    def add(self, embeddings: np.ndarray, ids: Iterable[str], paths: Iterable[str]) -> None:
        """Buffer (n, D) embeddings with their unique ids and source paths; full shards are committed."""
        embeddings = np.asarray(embeddings)
        ids, paths = list(ids), list(paths)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise SpLIPError(f"embeddings have shape {embeddings.shape}, the store holds (n, {self.dim})")
        if not len(embeddings) == len(ids) == len(paths):
            raise SpLIPError(f"{len(embeddings)} embeddings, {len(ids)} ids and {len(paths)} paths: "
                             "need one id and one path per embedding")
        if not all(isinstance(i, str) for i in ids) or not all(isinstance(p, str) for p in paths):
            raise SpLIPError("ids and paths must be str")
        if not np.isfinite(embeddings).all():
            bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
            raise SpLIPError(f"embedding of id {ids[bad]!r} is not finite (NaN/inf); not stored")
        batch = set(ids)
        clash = sorted(batch & self._ids) or [i for i, n in Counter(ids).items() if n > 1]
        if clash:
            raise SpLIPError(f"id {clash[0]!r} is already in store {self.path} (or twice in this batch); "
                             "skip ids in done_ids() when resuming")
        self._ids |= batch
        if ids:
            self._pending.append((embeddings.astype(np.float16), ids, paths))
            self._pending_rows += len(ids)
        while self._pending_rows >= self.shard_size:
            self._commit(shard_rows=self.shard_size)

    def add_errors(self, errors: Iterable[tuple[str, str]]) -> None:
        """Record skipped inputs as (path, reason); a path already recorded is not added twice."""
        for path, reason in errors:
            if path not in self._error_paths:
                self._pending_errors.append({"path": str(path), "reason": str(reason)})
                self._error_paths.add(path)
        if len(self._pending_errors) >= self.shard_size:
            self._commit(shard_rows=0)

    def _split_pending(self, rows: int) -> tuple[tuple[np.ndarray, list[str], list[str]], list]:
        """((emb (rows, D) float16, ids, paths) of the first `rows` buffered rows, the rest of the buffer)."""
        emb = np.concatenate([p[0] for p in self._pending])
        ids = [i for p in self._pending for i in p[1]]
        paths = [x for p in self._pending for x in p[2]]
        rest = [(emb[rows:], ids[rows:], paths[rows:])] if rows < len(ids) else []
        return (emb[:rows], ids[:rows], paths[:rows]), rest

    def _commit(self, shard_rows: int) -> None:
        """Write one shard of the first `shard_rows` buffered rows (0: none) and the pending errors,
        then store.json; the writer's own state changes only once store.json is written."""
        info = json.loads(json.dumps(self._info))  # the next commit record
        counts = info["counts"]
        try:
            if shard_rows:
                shard = len(info["shards"])
                (emb, ids, paths), rest = self._split_pending(shard_rows)
                table = pa.table({"id": ids, "path": paths, "shard": np.full(len(ids), shard, np.int32),
                                  "row": np.arange(len(ids), dtype=np.int32)}, schema=_META_SCHEMA)
                write_with_atomic(_emb_file(self.path, shard), lambda tmp: _save_npy(tmp, emb))
                write_with_atomic(_meta_file(self.path, shard), lambda tmp: pq.write_table(table, str(tmp)))
                info["shards"].append({"rows": len(ids)})
                counts["rows"] += len(ids)
                counts["shards"] += 1
            errors = self._errors + self._pending_errors
            if self._pending_errors:
                write_text_atomic(self.path / ERRORS_FILE, "".join(json.dumps(e) + "\n" for e in errors))
                counts["errors"] = len(errors)
            write_text_atomic(self.path / STORE_FILE, json.dumps(info, indent=1))
        except DiskWriteError as e:  # nothing of this commit counts; what was committed before stays
            kept = self._info["counts"]["rows"]
            raise DiskWriteError(f"{e} (store {self.path} keeps its {kept} committed rows: re-running "
                                 "`splip-engine embed` with the same --out resumes from them)", e.errno) from e
        self._info, self._errors, self._pending_errors = info, errors, []
        if shard_rows:
            self._pending, self._pending_rows = rest, self._pending_rows - shard_rows

    def close(self) -> None:
        """Commit the last partial shard and pending errors, and release the store."""
        if self._closed:
            return
        try:
            if self._pending_rows or self._pending_errors:
                self._commit(shard_rows=self._pending_rows)
        finally:
            self._closed = True
            self._lock.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        try:  # leaving on an error: still commit what is buffered, if that works
            self.close()
        except Exception as close_error:  # e.g. the disk is still full: the first error is the one to report
            log.warning("store %s: could not commit the buffered rows on the way out (%s)", self.path, close_error)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)

