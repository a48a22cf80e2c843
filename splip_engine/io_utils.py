"""Atomic file writes (temp file in the same directory + fsync + rename) shared by every writer.

An OSError while writing (a full disk above all) becomes a DiskWriteError: one line naming the
file, the problem and the fix, which the CLI prints without a traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from splip_engine.errors import DiskWriteError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on clean exit it is fsynced and renamed over `path`.

    On an exception the temp file is removed and `path` is left untouched, so a reader never
    sees a half-written file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    except OSError as e:
        raise write_error(path, e) from e
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:  # from the caller's writer too: it was writing this file
        raise write_error(path, e) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_error(path: str | Path, error: OSError) -> DiskWriteError:
    """The DiskWriteError for an OSError raised while writing `path`."""
    code = error.errno
    if code in _DISK_FULL or "no space left on device" in str(error).lower():
        problem, fix = "the disk is full (No space left on device)", "free disk space (or write elsewhere)"
    elif code in _NOT_WRITABLE:
        problem, fix = f"{error.strerror} (errno {code})", "check that the directory is writable (or write elsewhere)"
    else:
        problem, fix = f"{error.strerror or error}", "check the disk"
    return DiskWriteError(f"cannot write {path}: {problem}; {fix}, then run the command again", code)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_with_atomic(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
