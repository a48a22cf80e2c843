"""Record the files a block of code opens and the connections it tries, through Python's audit
hooks (PEP 578): `open` (io.open, os.open), directory listings, sockets and urllib requests. One
hook is installed per process (hooks cannot be removed); it records only inside `recording()`."""
from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field

_EVENTS = ("open", "os.listdir", "os.scandir", "urllib.Request", "subprocess.Popen")


@dataclass
class Recorded:
    opened: list[str] = field(default_factory=list)  # paths passed to open / listed
    network: list[str] = field(default_factory=list)  # socket / urllib events with their first argument


_active: list[Recorded] = []
_lock = threading.Lock()


def _hook(event: str, args: tuple) -> None:
    if not _active or not (event in _EVENTS or event.startswith("socket.")):
        return
    with _lock:
        for record in _active:
            if event in ("open", "os.listdir", "os.scandir"):
                record.opened.append(str(args[0]) if args else "")
            else:
                record.network.append(f"{event} {args[:1]!r}")


sys.addaudithook(_hook)


@contextlib.contextmanager
def recording():
    """Yield a Recorded filled with what the block opens and which connections it tries."""
    record = Recorded()
    _active.append(record)
    try:
        yield record
    finally:
        _active.remove(record)
