"""The embedding store that `splip-engine embed` writes and `splip-engine index` reads: float16
shards + a parquet id/metadata table, committed atomically so a killed job resumes with no lost
and no duplicated rows.

Layout of a store directory:

    store.json                 the commit record: format_version, dim, dtype, modality, engine info,
                               counts, the committed shards and the input units read whole (a shard
                               or error not listed here does not exist)
    shards/emb-00000.npy       (n, D) float16 embeddings of shard 0
    shards/meta-00000.parquet  id, path (the file the record came from), key (its key inside a tar
                               shard / parquet / ndjson, "" for an image file), caption and json
                               (the record's .txt / .json side data, null when absent): strings;
                               shard, row: int32
    errors.jsonl               one {"id", "path", "key", "reason"} per skipped input (its first
                               counts["errors"] lines are committed)

Commit protocol: a shard's two files are written atomically (temp + rename), then errors.jsonl
(the committed lines copied, the new ones appended, renamed over), then store.json; rewriting
store.json is the single atomic step that makes them part of the store. A process killed at any
instant leaves either the old or the new store.json; files it wrote beyond the commit are ignored
by readers and deleted when a writer reopens the store. One writer at a time (an advisory lock,
released by the OS even on SIGKILL).

Resume: the writer holds the set of stored ids and the set of ids recorded as errors (the only
per-row state it keeps: no embeddings, paths or metadata are read back), and in store.json the
state of every input unit (a tar shard, a parquet row group, an ndjson chunk): "done" once all its
records are committed (a resumed job does not read it again), "partial" while some are. Errors are
not retried by default, since an input that failed to decode fails again on every resume; pass
`retry_errors=True` to drop them and read every unit again.
"""
from __future__ import annotations

import fcntl
import functools
import itertools
import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splip_engine.errors import DiskWriteError, SpLIPError
from splip_engine.io_utils import write_text_atomic, write_with_atomic

FORMAT_VERSION = 2  # 2: key / caption / json columns, input units, error ids
STORE_FILE = "store.json"
ERRORS_FILE = "errors.jsonl"
SHARDS_DIR = "shards"
LOCK_FILE = ".lock"
ENGINE_HASH_KEY = "engine_hash"  # the key of engine_info that identifies the encoder
DEFAULT_SHARD_SIZE = 16384  # rows per shard: 16 MiB at D=512
DEFAULT_COMMIT_INTERVAL_S = 30.0  # a commit at least this often while rows come in: the most work a kill loses
MODALITIES = ("sketch", "photo")

_SHARD_FILE = re.compile(r"^(emb|meta)-(\d{5,})\.(npy|parquet)$")
METADATA_COLUMNS = ("key", "caption", "json")
"""Optional per-row string columns a writer may be given (null when not)."""
_META_SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()),
                          *((name, pa.string()) for name in METADATA_COLUMNS),
                          ("shard", pa.int32()), ("row", pa.int32())])
UNIT_DONE, UNIT_PARTIAL = "done", "partial"

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
    """The first `count` (committed) lines of errors.jsonl; entries of format 1 get their path as id."""
    if count == 0:
        return []
    try:
        with open(root / ERRORS_FILE, encoding="utf-8") as f:
            errors = [json.loads(line) for line in itertools.islice(f, count)]
    except (OSError, ValueError) as e:
        raise _damaged(root, f"{ERRORS_FILE} is unreadable ({e})") from e
    if len(errors) < count:
        raise _damaged(root, f"{ERRORS_FILE} has {len(errors)} lines, {STORE_FILE} committed {count}")
    for error in errors:
        error.setdefault("id", error.get("path", ""))
    return errors


def _read_column(file: Path, name: str) -> pa.ChunkedArray:
    """Column `name` of a shard's metadata file; all-null for a column a format-1 shard lacks."""
    if name in pq.read_schema(file).names:
        return pq.read_table(file, columns=[name]).column(name)
    return pa.chunked_array([pa.nulls(pq.read_metadata(file).num_rows, _META_SCHEMA.field(name).type)])


class Store:
    """A committed store opened for reading (see `open_store`); shards are memory-mapped and
    metadata is read one column at a time (ids alone for indexing, never the captions)."""

    def __init__(self, root: Path, info: dict[str, Any]):
        self.path = root
        self.info = info
        self._shards = info["shards"]
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

    @property
    def units(self) -> dict[str, str]:
        """{input unit key: "done" | "partial"} (see the module docstring)."""
        return dict(self.info.get("units", {}))

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

    def column(self, name: str) -> pa.ChunkedArray:
        """One metadata column (id, path, key, caption, json, shard, row) over all rows, in row order."""
        if name not in _META_SCHEMA.names:
            raise SpLIPError(f"a store has no column {name!r}; its columns are {_META_SCHEMA.names}")
        chunks = [chunk for s in range(len(self._shards)) for chunk in _read_column(_meta_file(self.path, s), name).chunks]
        return pa.chunked_array(chunks, _META_SCHEMA.field(name).type)

    def metadata(self, columns: Sequence[str] = _META_SCHEMA.names) -> pa.Table:
        """The metadata table (all rows) with `columns`."""
        return pa.table({name: self.column(name) for name in columns})

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """(N,) object array of str, in row order."""
        return self.column("id").to_numpy().astype(object)

    @functools.cached_property
    def paths(self) -> np.ndarray:
        """(N,) object array of str: the file each row was read from (an image, a tar shard, ...).
        Rows of one file share one str object (8 bytes a row, not a copy of the path per row)."""
        encoded = self.column("path").combine_chunks().dictionary_encode()
        return encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)[encoded.indices.to_numpy()]

    def shard_arrays(self) -> Iterator[np.ndarray]:
        """Memory-mapped (n, D) float16 arrays of the shards, in row order."""
        for shard in range(len(self._shards)):
            yield self._load_shard(shard)

    def iter_shards(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (embeddings (n, D) float16 memory-mapped, ids (n,) object) shard by shard."""
        for shard, emb in enumerate(self.shard_arrays()):
            yield emb, _read_column(_meta_file(self.path, shard), "id").to_numpy().astype(object)

    def embeddings(self, dtype: np.dtype = np.float16) -> np.ndarray:
        """All embeddings (N, D) in `dtype`, concatenated (one copy in memory)."""
        out = np.empty((self.count, self.dim), dtype=dtype)
        start = 0
        for emb in self.shard_arrays():
            out[start:start + len(emb)] = emb
            start += len(emb)
        return out

    def errors(self) -> list[dict[str, str]]:
        """The skipped inputs: [{"id", "path", "key", "reason"}] in the order they were recorded."""
        return _read_errors(self.path, int(self.info["counts"]["errors"]))


def open_store(path: str | Path) -> Store:
    """Open the committed part of the store at `path` for reading; SpLIPError if missing or damaged."""
    root = Path(path)
    return Store(root, _read_info(root))


class _Pending:
    """Rows added but not yet committed: embeddings and string columns, in add order."""

    def __init__(self) -> None:
        self.embeddings: list[np.ndarray] = []  # (n_i, D) float16 pieces
        self.columns: dict[str, list] = {name: [] for name in ("id", "path", *METADATA_COLUMNS)}
        self.units: list[tuple[str | None, int]] = []  # (unit key, rows) per add, in order
        self.rows = 0

    def append(self, embeddings: np.ndarray, columns: Mapping[str, list], unit: str | None) -> None:
        self.embeddings.append(embeddings)
        for name, values in self.columns.items():
            values.extend(columns.get(name) or [None] * len(embeddings))
        self.units.append((unit, len(embeddings)))
        self.rows += len(embeddings)

    def take(self, rows: int) -> tuple[np.ndarray, dict[str, list], set[str]]:
        """(embeddings (rows, D), columns, unit keys) of the first `rows` rows; the rest stays."""
        emb = np.concatenate(self.embeddings)
        columns = {name: values[:rows] for name, values in self.columns.items()}
        units, left = set(), rows
        for unit, n in self.units:
            if left <= 0:
                break
            if unit is not None:
                units.add(unit)
            left -= n
        return emb[:rows], columns, units

    def drop(self, rows: int) -> None:
        """Forget the first `rows` rows (after they were committed)."""
        emb = np.concatenate(self.embeddings)[rows:]
        self.embeddings = [emb] if len(emb) else []
        for values in self.columns.values():
            del values[:rows]
        kept, left = [], rows
        for unit, n in self.units:
            if left >= n:
                left -= n
            else:
                kept.append((unit, n - left))
                left = 0
        self.units, self.rows = kept, self.rows - rows


class StoreWriter:
    """Appends embeddings to a store in atomically committed shards; reopening resumes it.

    A shard is committed when it holds `shard_size` rows, or earlier, with what is buffered, once
    `commit_interval_s` seconds have passed since the last commit (so a killed job loses at most
    that much work, however slow it runs). Use as a context manager (or call `close()`): leaving
    flushes the last partial shard.
    """

    def __init__(
        self, path: str | Path, dim: int, modality: str, engine_info: Mapping[str, Any],
        shard_size: int = DEFAULT_SHARD_SIZE, retry_errors: bool = False,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    ):
        if modality not in MODALITIES:
            raise SpLIPError(f"modality {modality!r} is not one of {MODALITIES}")
        if dim <= 0 or shard_size <= 0 or not commit_interval_s > 0:
            raise SpLIPError(f"dim ({dim}), shard_size ({shard_size}) and commit_interval_s ({commit_interval_s}) "
                             "must be positive")
        self.path = Path(path)
        self.dim, self.modality, self.shard_size = int(dim), modality, int(shard_size)
        self.commit_interval_s = float(commit_interval_s)
        self._last_commit = time.monotonic()
        self._engine = dict(engine_info)
        self._pending = _Pending()
        self._pending_errors: list[dict[str, str]] = []
        self._finished: list[tuple[str, int]] = []  # (unit key, rows added when it finished), not yet committed
        self._lock = self._acquire_lock()
        try:
            self._open_or_create(retry_errors)
        except BaseException:
            self._lock.close()
            raise
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
                "counts": {"rows": 0, "shards": 0, "errors": 0}, "shards": [], "units": {},
            }
            self._ids: set[str] = set()
            self._error_ids: set[str] = set()
            self._remove_leftovers()
            write_text_atomic(self.path / STORE_FILE, json.dumps(self._info, indent=1))
            return
        store = open_store(self.path)
        self._check_same_engine(store.info)
        self._info = store.info
        self._info.setdefault("units", {})
        self._info["format_version"] = FORMAT_VERSION  # format-1 shards stay readable beside new ones
        self._ids = set(store.column("id").to_pylist())
        if retry_errors:  # read every unit again; stored rows are skipped by id, errors retried
            self._info["counts"]["errors"] = 0
            self._info["units"] = dict.fromkeys(self._info["units"], UNIT_PARTIAL)
            self._error_ids = set()
            write_text_atomic(self.path / STORE_FILE, json.dumps(self._info, indent=1))  # dropped from now on
        else:
            self._error_ids = {e["id"] for e in store.errors()}
        self._remove_leftovers()
        log.info("resuming store %s: %d rows in %d shards, %d errors, %d units read whole", self.path, store.count,
                 len(self._info["shards"]), self._info["counts"]["errors"],
                 sum(state == UNIT_DONE for state in self._info["units"].values()))

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

    def has_row(self, id_: str) -> bool:
        """Whether `id_` is stored (committed or buffered)."""
        return id_ in self._ids

    def has_error(self, id_: str) -> bool:
        """Whether `id_` is recorded as an error (committed or buffered)."""
        return id_ in self._error_ids

    def is_done(self, id_: str) -> bool:
        """Stored or recorded as an error: a resumed job skips it."""
        return id_ in self._ids or id_ in self._error_ids

    def unit_state(self, key: str) -> str | None:
        """"done" (all its records committed: skip it), "partial" (some are) or None, as committed."""
        return self._info["units"].get(key)

    @property
    def count(self) -> int:
        """Rows stored so far, buffered ones included."""
        return int(self._info["counts"]["rows"]) + self._pending.rows

    @property
    def error_count(self) -> int:
        """Errors recorded so far, buffered ones included."""
        return int(self._info["counts"]["errors"]) + len(self._pending_errors)

    def add(self, embeddings: np.ndarray, ids: Iterable[str], paths: Iterable[str], *,
            metadata: Mapping[str, Sequence[str | None]] | None = None, unit: str | None = None) -> None:
        """Buffer (n, D) embeddings with their unique ids, source paths, optional METADATA_COLUMNS
        values (one per row) and the input unit they came from; full shards are committed."""
        embeddings = np.asarray(embeddings)
        ids, paths = list(ids), list(paths)
        columns = {"id": ids, "path": paths, **{k: list(v) for k, v in (metadata or {}).items()}}
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise SpLIPError(f"embeddings have shape {embeddings.shape}, the store holds (n, {self.dim})")
        if not len(embeddings) == len(ids) == len(paths):
            raise SpLIPError(f"{len(embeddings)} embeddings, {len(ids)} ids and {len(paths)} paths: "
                             "need one id and one path per embedding")
        unknown = sorted(set(columns) - {"id", "path", *METADATA_COLUMNS})
        short = [k for k, v in columns.items() if len(v) != len(ids)]
        if unknown or short:
            raise SpLIPError(f"metadata columns {unknown or short} are not in {list(METADATA_COLUMNS)} or have "
                             "not one value per row")
        if not all(isinstance(i, str) for i in ids) or not all(isinstance(p, str) for p in paths):
            raise SpLIPError("ids and paths must be str")
        if not np.isfinite(embeddings).all():
            bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
            raise SpLIPError(f"embedding of id {ids[bad]!r} is not finite (NaN/inf); not stored")
        batch = set(ids)
        clash = sorted(batch & self._ids) or [i for i, n in Counter(ids).items() if n > 1]
        if clash:
            raise SpLIPError(f"id {clash[0]!r} is already in store {self.path} (or twice in this batch); "
                             "skip ids for which has_row() is true when resuming")
        self._ids |= batch
        if ids:
            self._pending.append(embeddings.astype(np.float16), columns, unit)
        while self._pending.rows >= self.shard_size:
            self._commit(shard_rows=self.shard_size)
        self._commit_if_due()

    def add_errors(self, errors: Iterable[Mapping[str, str] | tuple[str, str]]) -> None:
        """Record skipped inputs, each {"id", "path", "key"?, "reason"} or (path, reason) (id = path);
        an id already recorded is not added twice."""
        for error in errors:
            entry = ({"id": str(error[0]), "path": str(error[0]), "reason": str(error[1])}
                     if isinstance(error, tuple) else {k: str(v) for k, v in error.items()})
            entry.setdefault("id", entry.get("path", ""))
            if entry["id"] not in self._error_ids:
                self._pending_errors.append(entry)
                self._error_ids.add(entry["id"])
        if len(self._pending_errors) >= self.shard_size:
            self._commit(shard_rows=0)
        self._commit_if_due()

    def finish_unit(self, key: str) -> None:
        """Every record of input unit `key` was added (or recorded as an error): once they are all
        committed the unit is "done" and a resumed job does not read it again."""
        self._finished.append((key, self.count))
        self._commit_if_due()

    def _commit_if_due(self) -> None:
        """Commit everything buffered (a short shard) when commit_interval_s has passed since the last commit."""
        if time.monotonic() - self._last_commit >= self.commit_interval_s and (
                self._pending.rows or self._pending_errors or self._finished):
            self._commit(shard_rows=self._pending.rows)

    def _commit(self, shard_rows: int) -> None:
        """Write one shard of the first `shard_rows` buffered rows (0: none) and the pending errors,
        then store.json; the writer's own state changes only once store.json is written."""
        info = json.loads(json.dumps(self._info))  # the next commit record
        counts = info["counts"]
        try:
            if shard_rows:
                shard = len(info["shards"])
                emb, columns, units = self._pending.take(shard_rows)
                table = pa.table({**columns, "shard": np.full(shard_rows, shard, np.int32),
                                  "row": np.arange(shard_rows, dtype=np.int32)}, schema=_META_SCHEMA)
                write_with_atomic(_emb_file(self.path, shard), lambda tmp: _save_npy(tmp, emb))
                write_with_atomic(_meta_file(self.path, shard), lambda tmp: pq.write_table(table, str(tmp)))
                info["shards"].append({"rows": shard_rows})
                counts["rows"] += shard_rows
                counts["shards"] += 1
                for unit in units:
                    info["units"].setdefault(unit, UNIT_PARTIAL)
            if self._pending_errors:
                write_with_atomic(self.path / ERRORS_FILE, lambda tmp: self._write_errors(tmp, counts["errors"]))
                counts["errors"] += len(self._pending_errors)
            finished = [key for key, rows in self._finished if rows <= counts["rows"]]
            info["units"].update(dict.fromkeys(finished, UNIT_DONE))
            write_text_atomic(self.path / STORE_FILE, json.dumps(info, indent=1))
        except DiskWriteError as e:  # nothing of this commit counts; what was committed before stays
            kept = self._info["counts"]["rows"]
            raise DiskWriteError(f"{e} (store {self.path} keeps its {kept} committed rows: re-running "
                                 "`splip-engine embed` with the same --out resumes from them)", e.errno) from e
        self._info, self._pending_errors = info, []
        self._last_commit = time.monotonic()
        self._finished = [(key, rows) for key, rows in self._finished if rows > counts["rows"]]
        if shard_rows:
            self._pending.drop(shard_rows)

    def _write_errors(self, tmp: Path, committed: int) -> None:
        """errors.jsonl's `committed` lines, then the pending errors, into `tmp` (streamed, not held)."""
        with open(tmp, "w", encoding="utf-8") as out:
            if committed:
                with open(self.path / ERRORS_FILE, encoding="utf-8") as old:
                    shutil.copyfileobj(_FirstLines(old, committed), out)
            out.writelines(json.dumps(e) + "\n" for e in self._pending_errors)

    def close(self) -> None:
        """Commit the last partial shard, pending errors and finished units, and release the store."""
        if self._closed:
            return
        try:
            if self._pending.rows or self._pending_errors or self._finished:
                self._commit(shard_rows=self._pending.rows)
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


class _FirstLines:
    """A read-only file-like view of the first `count` lines of a text file (for copyfileobj)."""

    def __init__(self, file, count: int):
        self._lines = itertools.islice(file, count)

    def read(self, _size: int = -1) -> str:
        return "".join(itertools.islice(self._lines, 4096))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
