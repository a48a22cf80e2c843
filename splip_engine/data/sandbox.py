"""The decode budget: vector sketches (SVG, QuickDraw JSON) are rendered in a child process that is
killed when its render uses more CPU time than the budget (or waits 60x the budget, on a machine
too busy to run it), and that cannot allocate past the memory budget (RLIMIT_AS), so no file can
hold a core or the memory for longer than the budget allows. The budget counts CPU time so that a
file's outcome depends on the file, not on how loaded the machine is when it is read.

CairoSVG draws in C, where Python cannot interrupt it: a thread or a signal would not stop a
render bomb (a marker of thousands of shapes at each of thousands of vertices), only a process
kill does. Each process keeps one idle render child per thread that rendered (a few at most),
started on first use and started again after a kill. The child imports only the renderers (not
torch), runs at a lower CPU priority than the process it serves (a bomb slows the search or the
embedding that waits on it least), and carries a CPU-time limit of its own (RLIMIT_CPU) so it
dies even if its parent is gone. Raster formats stay in process: their cost is bounded by the
decompression-bomb pixel limit (images.MAX_IMAGE_PIXELS) and a process hop would cost more than
decoding a small JPEG (benchmarks/RESULTS.md, "Issue 20").

The wire format between the processes is plain bytes (a header of four unsigned ints, then the
name and the document; the answer: status, width, height, then RGB pixels or a message), never
pickle, so a child that a malicious file took over cannot make its parent run code.
"""
from __future__ import annotations

import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from splip_engine.errors import ImageDecodeError

log = logging.getLogger(__name__)

KINDS = ("svg", "drawing")
"""What a render child renders: an SVG document, one QuickDraw drawing's JSON."""
_HEADER = struct.Struct("!IIII")  # request: kind, timeout ms, len(name), len(data); answer: status, width, height, len(payload)
_OK, _BAD_INPUT, _NO_MEMORY, _BUG = range(4)
_START_TIMEOUT_S = 60.0  # a child that has not started by then (imports on a busy machine) is a broken install
_POLL_S = 0.05  # how often a wait checks its budget and whether its request was cancelled
_WALL_FACTOR = 60  # a render may wait this many times its CPU budget on a busy machine, no longer (on a
# machine at load 20, renders of real clip art within 2 s of CPU took over 30 s: benchmarks/RESULTS.md)
_TICKS = os.sysconf("SC_CLK_TCK")
_CHILD_NICE = 5  # render children yield the CPU to the process they serve
_IDLE_CHILDREN = 8  # children kept after use per process; more concurrent renders start and stop their own
_TIME_FLAG = "--decode-timeout SECONDS (Python: splip_engine.data.sandbox.set_budget)"
_MEMORY_FLAG = "--decode-memory MIB (Python: splip_engine.data.sandbox.set_budget)"


@dataclass(frozen=True)
class DecodeBudget:
    """Seconds of CPU time (waiting at most 60x that) and memory (MiB, on top of the renderer's own
    start-up) one vector image may take to render; validated on construction."""

    timeout_s: float = 2.0
    memory_mib: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not 0 < self.timeout_s <= 3600:
            raise ValueError(f"DecodeBudget.timeout_s={self.timeout_s!r}: must be seconds in (0, 3600]")
        if isinstance(self.memory_mib, bool) or not isinstance(self.memory_mib, int) \
                or not 16 <= self.memory_mib <= 1 << 20:
            raise ValueError(f"DecodeBudget.memory_mib={self.memory_mib!r}: must be an int of MiB in 16..1048576")


class RenderCancelled(Exception):
    """The caller gave up on a render (its client disconnected); the child was stopped."""


_budget = DecodeBudget()
_local = threading.local()  # .cancel: a threading.Event the current thread's renders watch


def set_budget(budget: DecodeBudget) -> None:
    """Set this process's decode budget (the CLI's --decode-timeout / --decode-memory); children
    started with an older memory budget are replaced on their next use."""
    global _budget
    _budget = budget


def get_budget() -> DecodeBudget:
    """This process's decode budget."""
    return _budget


class cancelled_by:  # noqa: N801 (a context manager used like a function)
    """`with cancelled_by(event):` renders in this thread stop (RenderCancelled) once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __enter__(self) -> None:
        self.previous = getattr(_local, "cancel", None)
        _local.cancel = self.event

    def __exit__(self, *exc) -> None:
        _local.cancel = self.previous


def render_vector(kind: str, data: bytes, name: str) -> Image.Image:
    """Render an SVG document or a QuickDraw drawing's JSON (`kind` in KINDS) into an RGB image
    within the decode budget. Raises ImageDecodeError naming `name` (bad, or over the budget)."""
    budget = _budget
    child = _pool.take(budget)
    try:
        return child.render(kind, data, name, budget, getattr(_local, "cancel", None))
    finally:
        _pool.give_back(child)


def prestart(count: int) -> None:
    """Start up to `count` idle render children now (a service's warm-up), so the first renders do
    not wait for a child to start."""
    _pool.prestart(min(count, _IDLE_CHILDREN), _budget)


def stop_all() -> None:
    """Kill this process's idle render children and every render in flight (a shutting-down
    service: the threads waiting on them get ImageDecodeError or RenderCancelled at once)."""
    _pool.stop_all()


class _Child:
    """One render child process and its pipes."""

    def __init__(self, memory_mib: int):
        self.memory_mib = memory_mib
        self.stopped = False  # stop_all() killed it: its render was abandoned, not over budget
        self.reusable = True  # False while a render is unanswered (a timeout, a cancel, a crash)
        package = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD_BOOT, package, str(memory_mib)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self.pid = os.getpid()  # the process that started it (a forked copy must not share it)
        ready = self._read_exact(1, _Deadline(_START_TIMEOUT_S, None), None, "start")
        if ready != b"R":
            self.kill()
            raise ImageDecodeError("the SVG / drawing renderer could not start (see the log above)")

    def render(self, kind: str, data: bytes, name: str, budget: DecodeBudget, cancel) -> Image.Image:
        """The rendered image, or ImageDecodeError; the child is left reusable only after an answer."""
        self.reusable = False
        name_bytes = name.encode("utf-8", "replace")
        try:
            self.proc.stdin.write(_HEADER.pack(KINDS.index(kind), round(budget.timeout_s * 1000), len(name_bytes), len(data)) + name_bytes)
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError as e:  # the child died between uses
            raise ImageDecodeError(f"{name}: the renderer stopped unexpectedly ({e}); try again") from e
        deadline = _Deadline(budget.timeout_s * _WALL_FACTOR, (self.proc.pid, budget.timeout_s))
        try:
            status, width, height, size = _HEADER.unpack(self._read_exact(_HEADER.size, deadline, cancel, name))
            payload = self._read_exact(size, deadline, cancel, name)
        except TimeoutError:
            self.kill()
            raise ImageDecodeError(f"{name}: rendering took longer than the decode budget of {budget.timeout_s:g} s "
                                   f"of CPU time (or {budget.timeout_s * _WALL_FACTOR:g} s waiting) and was stopped (a render bomb? if the file is genuine, raise it: {_TIME_FLAG})") from None
        except EOFError:
            code = self.kill()
            if self.stopped:
                raise RenderCancelled(f"{name}: render stopped (the process is shutting down)") from None
            raise ImageDecodeError(f"{name}: rendering was stopped (renderer exit status {code}), most likely over "
                                   f"the decode budget of {budget.memory_mib} MiB of memory (if the file is genuine, "
                                   f"raise it: {_MEMORY_FLAG})") from None
        self.reusable = status != _NO_MEMORY  # after a MemoryError the child's heap may be in any state
        if status == _OK:
            return Image.frombytes("RGB", (width, height), payload)
        message = payload.decode("utf-8", "replace")
        if status == _NO_MEMORY:
            raise ImageDecodeError(f"{name}: rendering needs more than the decode budget of {budget.memory_mib} MiB of "
                                   f"memory ({message[:200]}); if the file is genuine, raise it: {_MEMORY_FLAG}")
        if status == _BUG:
            log.error("%s: the renderer failed: %s", name, message)
            raise ImageDecodeError(f"{name}: could not be rendered ({message})")
        raise ImageDecodeError(message)

    def _read_exact(self, size: int, deadline: _Deadline, cancel, name: str) -> bytes:
        """`size` bytes from the child before `deadline` passes (TimeoutError), or EOFError if it died."""
        fd, chunks, got = self.proc.stdout.fileno(), [], 0
        while got < size:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled(name)
            if deadline.passed():
                raise TimeoutError(name)
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if ready:
                chunk = os.read(fd, min(size - got, 1 << 20))
                if not chunk:
                    raise EOFError(name)
                chunks.append(chunk)
                got += len(chunk)
        return b"".join(chunks)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the child, leaving its pipes to the thread that may be reading them (it sees EOF)."""
        self.stopped = True
        if self.pid == os.getpid() and self.proc.poll() is None:
            self.proc.kill()

    def kill(self) -> int | None:
        """Stop the child now (only from the process that started it); its exit status."""
        if self.pid != os.getpid():
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        return self.proc.wait()


class _Deadline:
    """When a render is over budget: `cpu` = (pid, seconds) of CPU time that process may use from
    now (what the budget counts: a file's cost, not how busy the machine is), or `wall_s` seconds
    of waiting in any case (a render starved of CPU must not stall its caller without end)."""

    def __init__(self, wall_s: float, cpu: tuple[int, float] | None):
        self.wall_end = time.monotonic() + wall_s
        self.cpu = cpu
        self.cpu_end = None if cpu is None else _cpu_seconds(cpu[0]) + cpu[1]

    def passed(self) -> bool:
        if time.monotonic() >= self.wall_end:
            return True
        return self.cpu is not None and _cpu_seconds(self.cpu[0]) >= self.cpu_end


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used, from /proc (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class _Pool:
    """Idle render children of this process; a render takes one (or starts one) and gives it back."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: list[_Child] = []
        self.busy: set[_Child] = set()
        os.register_at_fork(after_in_child=self._forget)

    def take(self, budget: DecodeBudget) -> _Child:
        with self.lock:
            while self.idle:
                child = self.idle.pop()
                if child.alive() and child.memory_mib == budget.memory_mib:
                    self.busy.add(child)
                    return child
                child.kill()
        child = _Child(budget.memory_mib)
        with self.lock:
            self.busy.add(child)
        return child

    def give_back(self, child: _Child) -> None:
        """Keep a child that answered its render for the next one; kill any other."""
        with self.lock:
            self.busy.discard(child)
            if child.reusable and not child.stopped and child.alive() and len(self.idle) < _IDLE_CHILDREN:
                self.idle.append(child)
                return
        child.kill()

    def prestart(self, count: int, budget: DecodeBudget) -> None:
        children = [_Child(budget.memory_mib) for _ in range(max(0, count - len(self.idle)))]
        with self.lock:
            self.idle.extend(children)

    def stop_all(self) -> None:
        with self.lock:
            idle, busy, self.idle = self.idle, list(self.busy), []
        for child in idle:
            child.kill()
        for child in busy:
            child.stop()  # its render thread sees EOF, raises, and closes it

    def _forget(self) -> None:
        """In a forked child: the parent's render children are not ours to use or kill."""
        self.lock = threading.Lock()
        self.idle, self.busy = [], set()


_pool = _Pool()


# ------------------------------------------------------------------ the child process
_CHILD_BOOT = """
import sys, types
package = types.ModuleType("splip_engine")  # its submodules, without the package's torch-importing __init__
package.__path__ = [sys.argv[1]]
sys.modules["splip_engine"] = package
from splip_engine.data.sandbox import serve_renders
serve_renders(int(sys.argv[2]))
"""


def serve_renders(memory_mib: int) -> None:
    """The render child's loop: read a request from stdin, answer on stdout, until stdin closes."""
    import resource

    from splip_engine.data import strokes, svg

    svg.import_renderer()
    os.nice(_CHILD_NICE)
    address_space = _address_space_bytes() + memory_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"R")
    stdout.flush()
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        kind, timeout_ms, name_size, data_size = _HEADER.unpack(header)
        name = stdin.read(name_size).decode("utf-8", "replace")
        data = stdin.read(data_size)
        _limit_cpu(2 * timeout_ms / 1000)
        try:
            if KINDS[kind] == "svg":
                image = svg.render_svg(data, name)
            else:
                image = strokes.render_drawing(strokes.parse_drawing_json(data, name)[1])
            answer = (_OK, image.width, image.height, image.convert("RGB").tobytes())
        except ImageDecodeError as e:
            out_of_memory = isinstance(e.__cause__, MemoryError) or "NO_MEMORY" in str(e)
            answer = (_NO_MEMORY if out_of_memory else _BAD_INPUT, 0, 0, str(e).encode())
        except MemoryError as e:
            answer = (_NO_MEMORY, 0, 0, f"MemoryError {e}".encode())
        except Exception as e:  # a bug in a renderer, reported to the parent as such
            answer = (_BUG, 0, 0, f"{type(e).__name__}: {e}".encode())
        stdout.write(_HEADER.pack(answer[0], answer[1], answer[2], len(answer[3])) + answer[3])
        stdout.flush()


def _limit_cpu(seconds: float) -> None:
    """RLIMIT_CPU at the CPU time used so far plus `seconds`: a render its parent stopped waiting
    for (or whose parent died) still ends, by SIGXCPU."""
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    limit = int(used.ru_utime + used.ru_stime + seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (limit, resource.RLIM_INFINITY))


def _address_space_bytes() -> int:
    """This process's virtual memory size now (VmSize), the base the memory budget adds to."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
