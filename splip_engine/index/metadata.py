"""StoreMetadata: the per-row metadata `embed` stored beside each embedding (id, source path, key
inside a container, caption, json), held in memory as compact Arrow columns so a server can return
it with every hit, and find any id's source, without a scan or a join per request.

API (stable; other modules build on it):

    meta = StoreMetadata.load(store_dir)   # or StoreMetadata.from_store(open_store(store_dir))
    meta.count, meta.nbytes                # rows; bytes held in memory
    rows = meta.rows_of(ids)               # (n,) int64 store rows of these ids, -1 for an unknown id
    meta.records(rows)                     # [{"id", "path", "key", "caption", "json"} | None per row]
    meta.lookup(ids)                       # records(rows_of(ids))
    meta.source(id_)                       # Source(path, key) of one id, or None

`path` is the file a row was read from and `key` its key there: an image file has key "" (the path
is the image); a tar shard's key is the record's member name without extension (its image member
is `key.<jpg|png|...>`); a parquet file's key is the row's id-column value; an ndjson file's key is
the drawing's key_id. `caption` and `json` are strings (json: the record's side data as JSON
text) or None. Ids are looked up through a table of their 64-bit hashes, sorted once at load (8
bytes a row) with the row of each (4 bytes a row); a lookup of k ids is k hashes, one
`searchsorted` and one take of the id column to rule out collisions. `records` is one Arrow take
per column. Memory: the strings themselves plus 4 bytes of offsets per row and column (paths
dictionary-encoded: 4 bytes a row plus each distinct path once) plus the 12-byte id table; 185 MiB
measured at 1M rows with ~40-byte captions and ~110-byte json (benchmarks/RESULTS.md, "Issue 22").
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from splip_engine.index.store import Store, open_store

COLUMNS = ("id", "path", "key", "caption", "json")
"""The fields of a record, in order."""


class Source(NamedTuple):
    """Where a row's image came from: the file `path`, and `key` inside it ("" for an image file)."""

    path: str
    key: str


class StoreMetadata:
    """The metadata columns of a store, in row order, with an id -> row table; read-only."""

    def __init__(self, columns: dict[str, pa.Array]):
        self._columns = columns
        ids = columns["id"].to_pylist()
        hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))  # (N,)
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]  # (N,) int64, sorted
        self._order = order.astype(np.int32)  # (N,) the row of each sorted hash
        paths = columns["path"]
        self._path_names = paths.dictionary.to_pylist()  # the distinct paths
        self._path_codes = paths.indices.to_numpy(zero_copy_only=False)  # (N,) int32 view of the column

    @classmethod
    def from_store(cls, store: Store) -> StoreMetadata:
        """Read the metadata columns of an open store (never its embeddings)."""
        columns = {name: store.column(name).combine_chunks() for name in COLUMNS}
        columns["path"] = columns["path"].dictionary_encode()  # few distinct files: 4 bytes a row
        return cls(columns)

    @classmethod
    def load(cls, store_dir: str | Path) -> StoreMetadata:
        """The metadata of the committed store at `store_dir`; SpLIPError if missing or damaged."""
        return cls.from_store(open_store(store_dir))

    @property
    def count(self) -> int:
        return len(self._columns["id"])

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: the columns and the id table."""
        return sum(c.nbytes for c in self._columns.values()) + self._hashes.nbytes + self._order.nbytes

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """(n,) int64 store rows of `ids`, -1 where an id is not in the store (or None)."""
        wanted = np.fromiter((hash(i) if i is not None else 0 for i in ids), dtype=np.int64, count=len(ids))
        if self.count == 0:
            return np.full(len(wanted), -1, np.int64)
        at = np.minimum(np.searchsorted(self._hashes, wanted), self.count - 1)  # (n,)
        rows = self._order[at].astype(np.int64)
        found = self._columns["id"].take(pa.array(rows)).to_pylist()
        for n, (id_, got) in enumerate(zip(ids, found)):
            if id_ != got:  # not stored, or a hash collision: walk the run of equal hashes
                rows[n] = self._scan_run(id_, wanted[n], int(at[n]))
        return rows

    def _scan_run(self, id_: str | None, hashed: int, start: int) -> int:
        ids = self._columns["id"]
        position = start
        while id_ is not None and position < self.count and self._hashes[position] == hashed:
            row = int(self._order[position])
            if ids[row].as_py() == id_:
                return row
            position += 1
        return -1

    def records(self, rows: np.ndarray) -> list[dict[str, str | None] | None]:
        """The record of each store row in `rows` (n,) int64; None where a row is -1."""
        rows = np.asarray(rows, dtype=np.int64)
        valid = rows >= 0
        taken = pa.array(np.where(valid, rows, 0))
        columns = [self._column_values(name, taken) for name in COLUMNS]
        return [dict(zip(COLUMNS, values)) if ok else None for ok, *values in zip(valid.tolist(), *columns)]

    def _column_values(self, name: str, rows: pa.Array) -> list[str | None]:
        if name == "path":  # the few distinct paths are decoded once, at load
            return [self._path_names[code] for code in self._path_codes[rows.to_numpy()].tolist()]
        return self._columns[name].take(rows).to_pylist()

    def lookup(self, ids: Sequence[str]) -> list[dict[str, str | None] | None]:
        """The record of each id (None for an id not in the store)."""
        return self.records(self.rows_of(ids))

    def source(self, id_: str) -> Source | None:
        """Where the image of `id_` came from, or None if the store has no such id."""
        row = int(self.rows_of([id_])[0])
        if row < 0:
            return None
        return Source(self._columns["path"][row].as_py(), self._columns["key"][row].as_py() or "")
