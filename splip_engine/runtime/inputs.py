"""What `embed` reads: a registry of input kinds, each listing its records lazily in units a worker
reads whole, so nothing per record is held before it is decoded.

| kind          | `--input`                                                    | id                 | unit          |
| ------------- | ------------------------------------------------------------ | ------------------ | ------------- |
| folder        | a directory of image files (recursive)                       | relative path      | 1024 files    |
| list          | a .txt with one image path per line                          | the line           | 1024 files    |
| parquet-paths | .parquet with a `path` column (and optionally `id`)          | id, else path      | 1024 rows     |
| parquet-bytes | .parquet with image bytes (img2dataset), `--image-column`    | `--id-column`      | a row group   |
| tar           | webdataset / img2dataset shards: `'shards/{00000..00099}.tar'`, a directory of .tar, or a .txt list of them | `<shard stem>/<key>` | a shard |
| ndjson        | QuickDraw .ndjson drawings (a file, a directory, a pattern) | `key_id`           | 8 MiB of lines |

A tar record is the run of members sharing a key (webdataset's rule: the member name up to the
first dot of its base name); its image is the `jpg|jpeg|png|webp` member, its `.txt` becomes
the caption and its `.json` the json metadata. Shards are streamed with `tarfile` (never
extracted) and parquet row groups with pyarrow, in the worker that reads the unit.

Ids of files (folder, list, parquet-paths) are known before decoding, so a resumed job drops the
stored ones from a unit before it is read; container units (tar, parquet-bytes, ndjson) carry a
`key` the store marks "done" once all their records are committed, so a resumed job skips them
unread. Problems are RecordErrors naming the file and the key (a corrupt or non-image member, a
record without an image, an empty, missing or truncated shard): listed, never fatal.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from splip_engine.data.sandbox import DecodeBudget, get_budget
from splip_engine.errors import SpLIPError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
"""A tar record's image member, in order of preference."""
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
FILE_CHUNK = 1024  # records per unit of the file kinds
NDJSON_CHUNK_BYTES = 8 << 20  # bytes of lines per ndjson unit
_MEMBER_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext: (key, extension)
_SIDE_MEMBERS = {"txt": "caption", "json": "json"}
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz: tarfile detects these itself


@dataclass(frozen=True)
class Record:
    """One input image: `source` is a file path or the encoded bytes; `path` is the file it came
    from (the image, or the tar shard / parquet / ndjson holding it) and `key` its key there."""

    id: str
    source: str | bytes
    path: str
    key: str = ""
    caption: str | None = None
    json: str | None = None


@dataclass(frozen=True)
class RecordError:
    """An input that cannot be embedded: `id` is unique per problem (a shard-level problem of
    shard S has id "S/"), `path` the file, `key` the record's key in it ("" for the whole file)."""

    id: str
    path: str
    key: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "path": self.path, "key": self.key, "reason": self.reason}


@dataclass(frozen=True)
class InputOptions:
    """How to read a parquet of image bytes (the image-bytes and id columns), and the decode budget
    of vector images (default: this process's, as the CLI set it) that decode workers apply."""

    image_column: str = "jpg"
    id_column: str = "key"
    budget: DecodeBudget = field(default_factory=get_budget)


@dataclass(frozen=True)
class Unit:
    """A part of the input one worker reads whole (picklable: it crosses to worker processes).

    `key` identifies a container unit across runs (its file's name and size and `start`), None for
    file chunks; `items` are the (id, path) pairs of a file chunk."""

    kind: str
    name: str
    path: str = ""
    key: str | None = None
    start: int = 0  # parquet row group / ndjson byte offset
    end: int = 0    # ndjson: end byte offset
    items: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Input:
    """A resolved `--input`: its kind, the files it names, and the options to read them with."""

    kind: str
    label: str
    files: tuple[str, ...] = ()     # containers (shards, parquet, ndjson) or the .txt list; () for a folder
    root: str = ""                  # the folder of the folder kind
    options: InputOptions = field(default_factory=InputOptions)

    def units(self, is_done: Callable[[str], bool] = lambda _: False) -> Iterator[Unit]:
        """The units to read, lazily; file kinds leave out the ids `is_done` says are done."""
        return INPUT_KINDS[self.kind].units(self, is_done)

    def count(self) -> int | None:
        """Records in the input, where cheap to know up front (for the progress bar), else None."""
        return INPUT_KINDS[self.kind].count(self)


def read_unit(unit: Unit, options: InputOptions) -> Iterator[Record | RecordError]:
    """The records (and problems) of one unit, in order; runs in the worker that reads it."""
    return INPUT_KINDS[unit.kind].read(unit, options)


def list_records(source: str | Path, kind: str = "auto", options: InputOptions | None = None) -> Iterator[Record | RecordError]:
    """Every record (and problem) of an input, in order, without decoding (a dry run of `embed`)."""
    resolved = open_input(source, kind, options)
    for unit in resolved.units():
        yield from read_unit(unit, resolved.options)


# ------------------------------------------------------------------ resolution
def _suffix(path: str) -> str:
    """The input-kind suffix of a file name: .tar.gz counts as a shard, case ignored."""
    name = path.lower()
    return next((s for s in SHARD_SUFFIXES if name.endswith(s)), os.path.splitext(name)[1])


def stem(path: str) -> str:
    """A shard's name without its directory and suffix: '/data/00042.tar' -> '00042'."""
    name = os.path.basename(path)
    return name[: len(name) - len(_suffix(name))] if _suffix(name) else name


def _expand_pattern(pattern: str) -> list[str]:
    """The names a webdataset brace pattern ('shards/{00000..00099}.tar') stands for."""
    from braceexpand import UnbalancedBracesError, braceexpand

    try:
        names = list(braceexpand(pattern))
    except UnbalancedBracesError as e:
        raise SpLIPError(f"input pattern {pattern!r} has unbalanced braces ({e}); write e.g. "
                         "'shards/{00000..00099}.tar'") from e
    if not any(os.path.exists(name) for name in names):
        raise SpLIPError(f"input pattern {pattern!r} matches no file ({len(names)} names, e.g. {names[0]!r}); "
                         "check the directory and the range")
    return names


def _container_kind(files: list[str], label: str, options: InputOptions) -> str:
    """tar / parquet-* / ndjson for a list of container files, all of one suffix."""
    suffixes = {".tgz": ".tar", ".tar.gz": ".tar"}
    found = sorted({suffixes.get(_suffix(f), _suffix(f)) for f in files})
    if len(found) != 1 or found[0] not in (".tar", ".parquet", ".ndjson"):
        raise SpLIPError(f"input {label} names files of kinds {found}; give tar shards (.tar), parquet files or "
                         ".ndjson files, one kind at a time")
    if found[0] == ".parquet":
        return _parquet_kind(files, options)
    return {".tar": "tar", ".ndjson": "ndjson"}[found[0]]


def _parquet_kind(files: list[str], options: InputOptions) -> str:
    """parquet-bytes when the first file has the image column, parquet-paths when it has `path`."""
    first = next((f for f in files if os.path.exists(f)), files[0])
    names = _parquet_columns(first)
    if options.image_column in names:
        return "parquet-bytes"
    if "path" in names:
        return "parquet-paths"
    raise SpLIPError(f"parquet {first} has no {options.image_column!r} image-bytes column and no 'path' column "
                     f"(its columns: {names}); pass --image-column NAME")


def _parquet_columns(file: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(file).names
    except (OSError, pa.ArrowException) as e:
        raise SpLIPError(f"cannot read parquet {file} ({e})") from e


def _list_entries(file: Path) -> list[str]:
    """The non-empty, non-comment lines of a .txt list."""
    lines = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _check_list(label: str, entries: list[str], sample: int = 1000) -> None:
    """A file read as a list must look like one: most of its first `sample` lines name image files
    (an image extension, or an existing file), else it is some other text file given by mistake."""
    image_suffixes = tuple(f".{e}" for e in (*IMAGE_EXTENSIONS, "gif", "bmp", "tif", "tiff", "svg"))
    head = entries[:sample]
    bad = [(n, line) for n, line in enumerate(head, 1)
           if not (_suffix(line) in image_suffixes or os.path.isfile(line))]
    if len(bad) * 2 > len(head):
        number, line = bad[0]
        raise SpLIPError(f"input {label} is not a list of image paths: {len(bad)} of its first {len(head)} lines are "
                         f"not (line {number}: {line[:80]!r}); a list holds one image file path per line; pass a "
                         "folder of images, a .txt list, a .parquet, tar shards or .ndjson drawings")


def _dir_containers(directory: Path) -> list[str] | None:
    """The top-level tar shards / ndjson / parquet files of a directory holding no image files at
    its top (img2dataset writes .parquet and _stats.json beside its .tar); None for a folder."""
    files = sorted(str(p) for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    for kind in (SHARD_SUFFIXES, (".ndjson",)):
        found = [f for f in files if _suffix(f) in kind]
        if found:
            return found
    parquet = [f for f in files if _suffix(f) == ".parquet"]
    images = [f for f in files if _suffix(f).lstrip(".") in (*IMAGE_EXTENSIONS, "gif", "bmp", "tif", "tiff", "svg")]
    return parquet if parquet and not images else None


def open_input(source: str | Path, kind: str = "auto", options: InputOptions | None = None) -> Input:
    """Resolve `--input` (see the module docstring) into an Input; `kind` forces a kind."""
    options = options or InputOptions()
    label = str(source)
    if kind != "auto" and kind not in INPUT_KINDS:
        raise SpLIPError(f"input kind {kind!r} is not one of {['auto', *INPUT_KINDS]}")
    path = Path(source)
    if "{" in label and not path.exists():
        files = _expand_pattern(label)
        found = _container_kind(files, label, options)
    elif path.is_dir():
        containers = _dir_containers(path)
        if containers is None or kind == "folder":
            return Input("folder", label, root=str(path), options=options)
        files, found = containers, _container_kind(containers, label, options)
    elif path.is_file() and _suffix(label) in (*SHARD_SUFFIXES, ".parquet", ".ndjson"):
        files, found = [label], _container_kind([label], label, options)
    elif path.is_file():
        entries = _list_entries(path)
        if entries and _suffix(entries[0]) in (*SHARD_SUFFIXES, ".parquet", ".ndjson"):
            files, found = entries, _container_kind(entries, label, options)
        else:
            _check_list(label, entries)
            files, found = [label], "list"
    else:
        raise SpLIPError(f"input {label} does not exist: pass a directory, a .txt file list, a .parquet, tar "
                         "shards ('shards/{00000..00099}.tar') or .ndjson drawings")
    if kind not in ("auto", found):
        raise SpLIPError(f"input {label} is {found}, not {kind}; leave --input-kind at auto or pass a {kind} input")
    _check_unique_names(files, found, label)
    return Input(found, label, files=tuple(files), options=options)


def _check_unique_names(files: list[str], kind: str, label: str) -> None:
    """Container files need distinct names: a tar shard's name is in its records' ids, and every
    container's name is in its units' keys."""
    if kind == "list":
        return
    seen: dict[str, str] = {}
    for file in files:
        other = seen.setdefault(stem(file), file)
        if other != file:
            raise SpLIPError(f"input {label} holds two files named {stem(file)!r} ({other}, {file}): their ids would "
                             "clash; give every shard a distinct name")


# ------------------------------------------------------------------ kinds
class InputKind:
    """One kind of input: how to list its units (main process) and read a unit (worker)."""

    def units(self, source: Input, is_done: Callable[[str], bool]) -> Iterator[Unit]:
        raise NotImplementedError

    def read(self, unit: Unit, options: InputOptions) -> Iterator[Record | RecordError]:
        raise NotImplementedError

    def count(self, source: Input) -> int | None:
        return None


class _FileKind(InputKind):
    """Kinds whose records are image files named up front: units are chunks of pending files."""

    def pairs(self, source: Input) -> Iterator[tuple[str, str]]:
        """(id, path) of every record, in order."""
        raise NotImplementedError

    def units(self, source: Input, is_done: Callable[[str], bool]) -> Iterator[Unit]:
        return file_units(((id_, path) for id_, path in self.pairs(source) if not is_done(id_)), source.label)

    def read(self, unit: Unit, options: InputOptions) -> Iterator[Record | RecordError]:
        return (Record(id_, path, path) for id_, path in unit.items)

    def count(self, source: Input) -> int | None:
        ids = set()
        for id_, _ in self.pairs(source):
            if id_ in ids:
                raise SpLIPError(f"input {source.label} lists id {id_!r} twice; ids must be unique")
            ids.add(id_)
        return len(ids)


class FolderKind(_FileKind):
    """Every file under a directory, recursively (non-images are kept, to be listed as errors)."""


    def pairs(self, source: Input) -> Iterator[tuple[str, str]]:
        root = Path(source.root)
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    path = Path(folder) / name
                    yield path.relative_to(root).as_posix(), str(path)

    def count(self, source: Input) -> int | None:
        return sum(1 for _ in self.pairs(source))  # ids are unique by construction


class ListKind(_FileKind):
    """A .txt of image paths, one per line (# comments and blank lines skipped); id = the line."""


    def pairs(self, source: Input) -> Iterator[tuple[str, str]]:
        return ((line, line) for line in _list_entries(Path(source.files[0])))


class ParquetPathsKind(_FileKind):
    """Parquet rows with a `path` column (and optionally `id`), read one row group at a time."""


    def pairs(self, source: Input) -> Iterator[tuple[str, str]]:
        import pyarrow.parquet as pq

        for file in source.files:
            names = _parquet_columns(file)
            if "path" not in names:
                raise SpLIPError(f"parquet {file} has no 'path' column (its columns: {names})")
            columns = ["path", "id"] if "id" in names else ["path"]
            parquet = pq.ParquetFile(file)
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=columns)
                paths = [str(p) for p in table.column("path").to_pylist()]
                ids = [str(i) for i in table.column("id").to_pylist()] if "id" in columns else paths
                yield from zip(ids, paths)


def file_units(pairs: Iterable[tuple[str, str]], name: str, size: int | None = None) -> Iterator[Unit]:
    """(id, path) pairs of image files in units of `size` (default FILE_CHUNK), lazily (named
    `name#0`, `name#1`, ...)."""
    pairs = iter(pairs)
    for number in itertools.count():
        chunk = tuple(itertools.islice(pairs, size or FILE_CHUNK))
        if not chunk:
            return
        yield Unit("list", f"{name}#{number}", items=chunk)


def _file_key(kind: str, path: str, start: int = 0) -> str:
    """A container unit's key: its kind, file name, size and start (a resumed job, even from a
    moved copy of the files, recognises it; a rewritten file of another size is read again)."""
    return f"{kind}:{stem(path)}:{os.path.getsize(path) if os.path.exists(path) else -1}:{start}"


class TarKind(InputKind):
    """webdataset / img2dataset tar shards, one unit per shard, streamed."""

    def units(self, source: Input, is_done: Callable[[str], bool]) -> Iterator[Unit]:
        for file in source.files:
            yield Unit("tar", stem(file), file, key=_file_key("tar", file))

    def count(self, source: Input) -> int | None:
        """From img2dataset's `<shard>_stats.json` ("successes") when every shard has one."""
        total = 0
        for file in source.files:
            stats = Path(file).with_name(f"{stem(file)}_stats.json")
            try:
                total += int(json.loads(stats.read_text())["successes"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return total

    def read(self, unit: Unit, options: InputOptions) -> Iterator[Record | RecordError]:
        shard, path = unit.name, unit.path

        def problem(key: str, reason: str) -> RecordError:
            return RecordError(f"{shard}/{key}", path, key, reason)

        try:
            size = os.path.getsize(path)
        except OSError as e:
            yield problem("", f"cannot read shard {path}: {e.strerror or e}")
            return
        if size == 0:
            yield problem("", f"shard {path} is empty (0 bytes)")
            return
        key, members, seen = None, {}, set()
        try:
            with open(path, "rb") as raw:
                compressed = raw.read(6).startswith(_COMPRESSED_MAGIC)
                raw.seek(0)
                # a plain tar is read in order with seeks over skipped data (20% less CPU than the
                # stream mode compressed shards need); neither extracts anything to disk
                with tarfile.open(fileobj=raw, mode="r|*" if compressed else "r:") as tar:
                    for info in tar:
                        member_key, extension = _member_key(info)
                        if member_key is None:
                            continue
                        if member_key != key:
                            if key is not None:
                                yield _tar_record(shard, path, key, members, seen)
                            key, members = member_key, {}
                        if extension in IMAGE_EXTENSIONS or extension in _SIDE_MEMBERS:
                            members[extension] = tar.extractfile(info).read()
                        else:
                            members.setdefault(extension, None)
                    cut = not compressed and size - tar.offset < tarfile.BLOCKSIZE  # no end-of-archive block
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:  # tarfile / gzip / bz2 / lzma on cut or bad data
            where = f"in record {key!r}" if key is not None else "before its first record"
            yield problem(key or "", f"shard {path} is truncated or corrupt {where}: {type(e).__name__}: {e}")
            return
        if cut:
            yield problem(key or "", f"shard {path} is truncated: it ends inside the tar header after record "
                                     f"{key!r} (no end-of-archive block); the records before it are stored")
        elif key is not None:
            yield _tar_record(shard, path, key, members, seen)
        else:
            yield problem("", f"shard {path} holds no records (an empty tar)")


def _member_key(info: tarfile.TarInfo) -> tuple[str | None, str]:
    """(record key, lower-case extension) of a tar member by webdataset's rule; None to skip it
    (not a regular file, no extension, or a `__meta__` member)."""
    if not info.isreg():
        return None, ""
    match = _MEMBER_KEY.match(info.name)
    if match is None or os.path.basename(info.name).startswith("__"):
        return None, ""
    return match.group(1), match.group(2).lower()


def _tar_record(shard: str, path: str, key: str, members: dict[str, bytes | None], seen: set[str]) -> Record | RecordError:
    """The Record of one key's members, or why it has none."""
    id_ = f"{shard}/{key}"
    if key in seen:
        return RecordError(id_, path, key, f"key {key!r} appears twice in shard {path} (its members are not "
                                           "together); the first is stored")
    seen.add(key)
    image = next((members[e] for e in IMAGE_EXTENSIONS if members.get(e) is not None), None)
    if image is None:
        found = ", ".join(f".{e}" for e in members) or "none"
        return RecordError(id_, path, key, f"record {key!r} of shard {path} has no {'|'.join(IMAGE_EXTENSIONS)} "
                                           f"member (members: {found})")
    side = {column: members[e].decode("utf-8", "replace") for e, column in _SIDE_MEMBERS.items()
            if members.get(e) is not None}
    return Record(id_, image, path, key, **side)


class ParquetBytesKind(InputKind):
    """Parquet with the image bytes in a column (img2dataset's parquet output), one unit per row group."""

    def units(self, source: Input, is_done: Callable[[str], bool]) -> Iterator[Unit]:
        import pyarrow as pa
        import pyarrow.dataset as ds

        options = source.options
        for file in source.files:
            if not os.path.exists(file):
                yield Unit("parquet-bytes", stem(file), file, key=_file_key("parquet-bytes", file, -1), start=-1)
                continue
            dataset = ds.dataset(file, format="parquet")
            schema = dataset.schema
            for column, flag in ((options.image_column, "--image-column"), (options.id_column, "--id-column")):
                if column not in schema.names:
                    raise SpLIPError(f"parquet {file} has no {column!r} column (its columns: {schema.names}); "
                                     f"pass {flag} NAME")
            image_type = schema.field(options.image_column).type
            if not (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)):
                raise SpLIPError(f"column {options.image_column!r} of parquet {file} holds {image_type}, not image "
                                 "bytes; pass --image-column NAME of a binary column")
            for fragment in dataset.get_fragments():
                for group in fragment.split_by_row_group():
                    index = group.row_groups[0].id
                    yield Unit("parquet-bytes", f"{stem(file)}#{index}", file,
                               key=_file_key("parquet-bytes", file, index), start=index)

    def count(self, source: Input) -> int | None:
        import pyarrow.parquet as pq

        return sum(pq.read_metadata(f).num_rows for f in source.files if os.path.exists(f))

    def read(self, unit: Unit, options: InputOptions) -> Iterator[Record | RecordError]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if unit.start < 0:
            yield RecordError(f"{unit.name}/", unit.path, "", f"parquet file {unit.path} not found")
            return
        try:
            parquet = pq.ParquetFile(unit.path)
            for batch in parquet.iter_batches(batch_size=256, row_groups=[unit.start]):
                images = batch.column(options.image_column).to_pylist()
                ids = batch.column(options.id_column).to_pylist()
                captions = batch.column("caption").to_pylist() if "caption" in batch.schema.names else None
                side = batch.drop_columns([options.image_column]).to_pylist()  # the row's other columns
                for row, (id_, image) in enumerate(zip(ids, images)):
                    yield _parquet_record(unit, options, id_, image, captions[row] if captions else None, side[row])
        except (OSError, pa.ArrowException) as e:
            yield RecordError(f"{unit.name}/", unit.path, "", f"row group {unit.start} of parquet {unit.path} is "
                                                              f"unreadable: {e}")


def _parquet_record(unit: Unit, options: InputOptions, id_, image: bytes | None, caption, side: dict) -> Record | RecordError:
    key = "" if id_ is None else str(id_)
    if id_ is None:
        return RecordError(f"{unit.name}/@null-id", unit.path, key, f"a row of row group {unit.start} of {unit.path} "
                                                                    f"has a null {options.id_column!r}")
    if image is None:
        status = f" (status {side.get('status')!r}: {side.get('error_message')})" if "status" in side else ""
        return RecordError(key, unit.path, key, f"row {key!r} of {unit.path} has no image bytes{status}")
    return Record(key, image, unit.path, key, None if caption is None else str(caption), json.dumps(side, default=str))


class NdjsonKind(InputKind):
    """QuickDraw drawings, one JSON object per line (id = its `key_id`, the line is the source);
    a file is read in units of NDJSON_CHUNK_BYTES of whole lines."""

    def units(self, source: Input, is_done: Callable[[str], bool]) -> Iterator[Unit]:
        for file in source.files:
            starts, size = _line_aligned_starts(file)
            for start, end in zip(starts, [*starts[1:], size]):
                yield Unit("ndjson", f"{stem(file)}@{start}", file, key=_file_key("ndjson", file, start),
                           start=start, end=end)

    def count(self, source: Input) -> int | None:
        total = 0
        for file in filter(os.path.isfile, source.files):
            with open(file, "rb") as f:
                total += sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        return total

    def read(self, unit: Unit, options: InputOptions) -> Iterator[Record | RecordError]:
        name = stem(unit.path)
        try:
            with open(unit.path, "rb") as f:
                f.seek(unit.start)
                offset = unit.start
                while offset < unit.end or unit.end == 0:
                    line = f.readline()
                    if not line:
                        break
                    yield _drawing_record(name, unit.path, offset, line.rstrip(b"\r\n"))
                    offset += len(line)
        except OSError as e:
            yield RecordError(f"{name}/", unit.path, "", f"cannot read {unit.path}: {e.strerror or e}")


def _line_aligned_starts(file: str) -> tuple[list[int], int]:
    """(byte offsets ~NDJSON_CHUNK_BYTES apart, each the start of a line, starting at 0; the file
    size); a missing file gives ([0], 0), one unit whose reading reports it."""
    if not os.path.isfile(file):
        return [0], 0
    size, starts = os.path.getsize(file), [0]
    with open(file, "rb") as f:
        while starts[-1] + NDJSON_CHUNK_BYTES < size:
            f.seek(starts[-1] + NDJSON_CHUNK_BYTES)
            f.readline()  # to the start of the next line
            if f.tell() >= size:
                break
            starts.append(f.tell())
    return starts, size


def _drawing_record(name: str, path: str, offset: int, line: bytes) -> Record | RecordError:
    """A QuickDraw line's Record (source = the line's bytes), or why it is not one."""
    key = f"@{offset}"
    try:
        drawing = json.loads(line)
        id_ = str(drawing["key_id"])
    except (ValueError, KeyError, TypeError) as e:
        return RecordError(f"{name}/{key}", path, key, f"line at byte {offset} of {path} is not a QuickDraw drawing "
                                                       f"with a key_id ({type(e).__name__}: {e})")
    side = {k: v for k, v in drawing.items() if k != "drawing"}
    word = side.get("word")
    return Record(id_, line, path, id_, None if word is None else str(word), json.dumps(side))


INPUT_KINDS: dict[str, InputKind] = {
    "folder": FolderKind(), "list": ListKind(), "parquet-paths": ParquetPathsKind(),
    "parquet-bytes": ParquetBytesKind(), "tar": TarKind(), "ndjson": NdjsonKind(),
}
"""Every input kind by name (`--input-kind`); `open_input` detects which one an input is."""
