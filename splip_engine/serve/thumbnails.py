"""Thumbnails: the gallery photo of an id, read from where the store found it, resized and cached.

Only ids of the served index have a thumbnail: the id is looked up in the index, and its file (an
image file, a webdataset tar shard, an img2dataset parquet of image bytes, a QuickDraw .ndjson)
and key there come from the served store's metadata (`serve --store`), else from the index's path
and the id; nothing in the request is ever used as a path. A tar member is found by its webdataset
key (uncompressed shards are indexed once, then read by offset), a parquet row by its `key` (or
`id`) column, an ndjson drawing by its key_id.
Encoded thumbnails (JPEG, longer side THUMBNAIL_SIDE) are kept in an LRU cache per index version.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from splip_engine.data.images import load_image
from splip_engine.errors import ImageDecodeError, SpLIPError
from splip_engine.runtime.inputs import IMAGE_EXTENSIONS, SHARD_SUFFIXES, stem

THUMBNAIL_SIDE = 256
"""Longer side of a thumbnail in pixels (the page shows them at up to 160 CSS px, 2x for HiDPI)."""
CACHE_ITEMS = 2048
"""Thumbnails kept in memory (about 10 KB each)."""
_CONTAINERS_KEPT = 8  # tar / parquet / ndjson files whose key -> position map is kept
_PARQUET_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image")  # img2dataset names it after the format
_PARQUET_ID_COLUMNS = ("key", "id")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz


class ThumbnailError(SpLIPError):
    """The id is in the index but its photo cannot be read or decoded (the store's source moved?)."""


class _Lru(OrderedDict):
    """An OrderedDict that forgets its least recently used entries beyond `size` (callers lock)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class Thumbnails:
    """JPEG thumbnails of the ids of `current_index()` (called per request: a reloaded index counts);
    `current_metadata()`: the served store's StoreMetadata (index/metadata.py) or None, which gives
    each id's file and key; without it they follow from the index's path and the id."""

    def __init__(self, current_index: Callable[[], Any], current_metadata: Callable[[], Any] = lambda: None,
                 side: int = THUMBNAIL_SIDE, cache_items: int = CACHE_ITEMS):
        self._current_index = current_index
        self._current_metadata = current_metadata
        self.side = side
        self._cache = _Lru(cache_items)
        self._containers = _Lru(_CONTAINERS_KEPT)
        self._lock = threading.Lock()

    def get(self, id_: str) -> bytes | None:
        """The JPEG bytes of gallery item `id_`, None if the served index has no such id (or keeps
        no paths); ThumbnailError if its source cannot be read. Blocking: run it in a thread."""
        index = self._current_index()
        path = index.path_of(id_)  # membership: only ids of the served index
        if path is None:
            return None
        key = (getattr(index, "version", 1), id_)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        metadata = self._current_metadata()
        stored = metadata.source(id_) if metadata is not None else None
        source = self._source_of(stored.path, stored.key) if stored is not None else self._guess_source(id_, str(path))
        data = self._render(source)
        with self._lock:
            return self._cache.get_or_make(key, lambda: data)

    def _render(self, source: str | bytes) -> bytes:
        try:
            image = load_image(source, draft_size=(self.side, self.side))
        except ImageDecodeError as e:
            raise ThumbnailError(f"the photo cannot be decoded ({e})") from e
        image.thumbnail((self.side, self.side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    def _guess_source(self, id_: str, path: str) -> str | bytes:
        """`_source_of` without the store's key: a tar member's key is the id after `<shard stem>/`,
        a parquet row's and an ndjson drawing's key is the id (runtime/inputs.py's id rules)."""
        if path.lower().endswith(SHARD_SUFFIXES):
            prefix = stem(path) + "/"
            if not id_.startswith(prefix):
                raise ThumbnailError(f"id {id_!r} is not a member id of shard {stem(path)}")
            return self._source_of(path, id_[len(prefix):])
        return self._source_of(path, id_)

    def _source_of(self, path: str, key: str) -> str | bytes:
        """The image file path, or the encoded bytes of member `key` of the container `path`."""
        name = path.lower()
        if name.endswith(SHARD_SUFFIXES):
            return self._tar_member(path, key)
        if name.endswith(".parquet"):
            return self._parquet_row(path, key)
        if name.endswith(".ndjson"):
            return self._ndjson_line(path, key)
        return path

    def _positions(self, path: str, build: Callable[[str], Any]) -> Any:
        """The key -> position map of a container, built once per (path, size, mtime)."""
        try:
            facts = os.stat(path)
        except OSError as e:
            raise ThumbnailError(f"the gallery file {path} is unreadable: {e.strerror or e}") from e
        with self._lock:
            return self._containers.get_or_make((path, facts.st_size, facts.st_mtime_ns), lambda: build(path))

    def _tar_member(self, path: str, key: str) -> bytes:
        try:
            members = self._positions(path, _tar_positions)
            if key not in members:
                raise ThumbnailError(f"shard {path} has no image member for key {key!r}")
            offset, size = members[key]
            if offset is None:  # a compressed shard: no random access, stream to the member
                with tarfile.open(path, "r|*") as tar:
                    for info in tar:
                        if info.name == size:
                            return tar.extractfile(info).read()
                raise ThumbnailError(f"shard {path} changed: member {size!r} is gone")
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(size)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ThumbnailError(f"shard {path} is unreadable ({type(e).__name__}: {e})") from e

    def _parquet_row(self, path: str, id_: str) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            image_column, rows = self._positions(path, _parquet_positions)
            if id_ not in rows:
                raise ThumbnailError(f"parquet {path} has no row with key {id_!r}")
            group, row = rows[id_]
            value = pq.ParquetFile(path).read_row_group(group, columns=[image_column]).column(0)[row].as_py()
        except (OSError, pa.ArrowException) as e:
            raise ThumbnailError(f"parquet {path} is unreadable ({e})") from e
        if value is None:
            raise ThumbnailError(f"row {id_!r} of parquet {path} has no image bytes")
        return value

    def _ndjson_line(self, path: str, id_: str) -> bytes:
        try:
            offsets = self._positions(path, _ndjson_positions)
            if id_ not in offsets:
                raise ThumbnailError(f"{path} has no drawing with key_id {id_!r}")
            with open(path, "rb") as f:
                f.seek(offsets[id_])
                return f.readline()
        except OSError as e:
            raise ThumbnailError(f"{path} is unreadable: {e.strerror or e}") from e


def _tar_positions(path: str) -> dict[str, tuple[int | None, Any]]:
    """key -> (data offset, size) of each record's preferred image member in an uncompressed shard;
    key -> (None, member name) in a compressed one (webdataset's key rule, runtime/inputs.py)."""
    with open(path, "rb") as raw:
        compressed = raw.read(6).startswith(_COMPRESSED_MAGIC)
    found: dict[str, tuple[int, tuple[int | None, Any]]] = {}  # key -> (preference, position)
    with tarfile.open(path, "r|*" if compressed else "r:") as tar:
        for info in tar:
            base = os.path.basename(info.name)
            if not info.isreg() or base.startswith("__") or "." not in base:
                continue
            dot = len(info.name) - len(base) + base.index(".")
            key, extension = info.name[:dot], info.name[dot + 1:].lower()
            if extension in IMAGE_EXTENSIONS:
                rank = IMAGE_EXTENSIONS.index(extension)
                position = (None, info.name) if compressed else (info.offset_data, info.size)
                if key not in found or rank < found[key][0]:
                    found[key] = (rank, position)
    return {key: position for key, (_, position) in found.items()}


def _parquet_positions(path: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """(image-bytes column, key -> (row group, row in it)) of an img2dataset-style parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    binary = [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    image_column = next((c for c in _PARQUET_IMAGE_COLUMNS if c in binary), binary[0] if binary else None)
    id_column = next((c for c in _PARQUET_ID_COLUMNS if c in schema.names), None)
    if image_column is None or id_column is None:
        raise ThumbnailError(f"parquet {path} has no image-bytes column or no key / id column")
    rows = {}
    for group in range(parquet.num_row_groups):
        keys = parquet.read_row_group(group, columns=[id_column]).column(0).to_pylist()
        rows.update((str(key), (group, row)) for row, key in enumerate(keys) if key is not None)
    return image_column, rows


def _ndjson_positions(path: str) -> dict[str, int]:
    """key_id -> byte offset of its line in a QuickDraw .ndjson file."""
    offsets, offset = {}, 0
    with open(path, "rb") as f:
        for line in f:
            try:
                key_id = json.loads(line).get("key_id")
            except (ValueError, AttributeError):
                key_id = None
            if key_id is not None:
                offsets.setdefault(str(key_id), offset)
            offset += len(line)
    return offsets
