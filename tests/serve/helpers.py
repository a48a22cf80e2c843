"""Serve test helpers: sketch PNGs, the Python API reference, a real uvicorn server on 127.0.0.1
(a free port, in a background thread, always shut down), a real `serve` process and a gated encoder."""
from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_png(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A seeded sketch-like PNG: black strokes on white."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        draw.line([tuple(rng.integers(0, size, 2)), tuple(rng.integers(0, size, 2))], fill="black", width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server process that must be told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_process(args: list[str], log: Path, ready: Callable[[], bool],
                  timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """`python -m splip_engine serve ARGS` with its output in `log` (a file, not a pipe: a full pipe
    would block the server's logging); yields the process once `ready()` is true (an exception
    from it means not yet), and stops it on exit unless the test already has."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "splip_engine", "serve", *args], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"serve exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"serve did not become ready in {timeout:.0f} s"
            with contextlib.suppress(Exception):  # refused connection, no JSON yet, ...: not up yet
                if ready():
                    break
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def reference_search(encoder, index, images: list[bytes], k: int, modality: str = "sketch"):
    """The Python API answer: (scores (Q, k) float32, ids (Q, k) object)."""
    return index.search(encoder.embed(images, modality), k)


def wait_until(condition, timeout: float = 10.0) -> None:
    """Poll `condition()` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@contextlib.contextmanager
def running_server(app, timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (port 0: a free one) in a thread; yields the base URL
    and always stops the server (and its app lifespan) on exit."""
    with serving_thread(app, timeout) as (url, _):
        yield url


@contextlib.contextmanager
def serving_thread(app, timeout: float = 15.0):
    """`running_server`, yielding (base URL, the uvicorn Server): setting `server.should_exit` is
    what uvicorn's SIGTERM handler does (stop accepting, finish in-flight requests, then stop)."""
    import uvicorn

    # uvicorn binds the socket itself: a socket passed in via `sockets=` serves without TCP_NODELAY
    # here (about 40 ms per request from delayed ACKs)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=timeout)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "the test server did not stop"


class GatedEncoder:
    """Wraps an Encoder; `embed_pixels` blocks until `gate` is set, so a test holds the batch
    worker busy and fills the queue deterministically."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.gate = threading.Event()

    def embed_pixels(self, pixels, modality):
        if not self.gate.wait(timeout=20):
            raise RuntimeError("test gate never opened")
        return self._encoder.embed_pixels(pixels, modality)

    def __getattr__(self, name):
        return getattr(self._encoder, name)
