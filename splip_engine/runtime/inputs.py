"""Resolve an `embed` input (a directory, a file list or a parquet table) into (id, path) pairs."""
from __future__ import annotations

import os
from pathlib import Path

from splip_engine.errors import SpLIPError


def resolve_inputs(source: str | Path) -> list[tuple[str, str]]:
    """(id, path) pairs, sorted by id. A directory is walked recursively (ids = paths relative to
    it, every file kept so non-images are reported, not dropped); a .txt lists one path per line
    (id = the path); a .parquet needs a `path` column and may have an `id` column."""
    source = Path(source)
    if source.is_dir():
        pairs = []
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if not name.startswith("."):
                    path = Path(root) / name
                    pairs.append((path.relative_to(source).as_posix(), str(path)))
    elif source.suffix == ".parquet" and source.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        if "path" not in table.column_names:
            raise SpLIPError(f"{source} has no 'path' column (columns: {table.column_names})")
        paths = [str(p) for p in table.column("path").to_pylist()]
        ids = [str(i) for i in table.column("id").to_pylist()] if "id" in table.column_names else paths
        pairs = list(zip(ids, paths))
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        pairs = [(line, line) for line in lines if line and not line.startswith("#")]
    else:
        raise SpLIPError(f"input {source} does not exist: pass a directory, a .txt file list or a .parquet table")
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        raise SpLIPError(f"input {source} lists some ids twice; ids must be unique")
    return sorted(pairs)
