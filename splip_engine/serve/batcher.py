"""MicroBatcher: dynamic micro-batching of concurrent search requests behind a bounded queue.

Callers `submit()` one preprocessed image each and get a Future; one worker thread takes up to
`max_batch` queued requests (waiting at most `max_wait_ms` after the first for others to join),
runs one `encoder.embed_pixels` per modality present (one in the usual all-sketch case) and one
`index.search` for the whole batch, and resolves each Future with that request's top-k. A full
queue refuses the request at once (`Overloaded`), so overload sheds load instead of growing latency.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError

logger = logging.getLogger(__name__)

_STOP = object()  # queue sentinel: the worker finishes its batch and exits


class ServiceUnavailable(SpLIPError):
    """The request was not run and may be retried later (HTTP 503)."""


class Overloaded(ServiceUnavailable):
    """The batch queue is full; the request was not queued."""


@dataclass
class _Request:
    pixels: np.ndarray  # (3, S, S) float32, preprocessed
    modality: str
    k: int
    future: Future


class MicroBatcher:
    """Batches `submit()`ed queries into one encoder call and one index search; a context manager."""

    def __init__(self, encoder: Any, index: Any, max_batch: int = 32, max_wait_ms: float = 5.0,
                 queue_size: int = 256, on_batch: Callable[[int], None] | None = None):
        self.encoder = encoder
        self.index = index
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # orders submit() against close()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="splip-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def submit(self, pixels: np.ndarray, modality: str, k: int) -> Future:
        """Queue one query, pixels (3, S, S) float32; the Future gives (scores (k,) float32,
        ids (k,) object, None = no result). Raises Overloaded when the queue is full."""
        request = _Request(pixels, modality, k, Future())
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the search service is shutting down; retry shortly")
            try:
                self._queue.put_nowait(request)
            except queue.Full:
                raise self._overloaded() from None
        return request.future

    def is_alive(self) -> bool:
        """True while the worker thread runs batches (false after close())."""
        return self._thread.is_alive()

    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch being run)."""
        return self._queue.qsize()

    def raise_if_full(self) -> None:
        """Raise Overloaded now if submit() would (a cheap check before decoding an upload)."""
        if self._queue.full():
            raise self._overloaded()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new requests, run the ones already queued, stop the worker thread (requests
        still queued after `timeout` seconds get an error instead)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)  # behind every queued request; waits for room when the queue is full
        self._thread.join(timeout)
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not _STOP and request.future.set_running_or_notify_cancel():
                request.future.set_exception(ServiceUnavailable("the search service shut down before this request ran"))

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _overloaded(self) -> Overloaded:
        return Overloaded(f"the search queue is full ({self.queue_size} requests waiting, the queue_size "
                          "limit); retry shortly")

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._run_batch(batch)

    def _collect(self) -> tuple[list[_Request], bool]:
        """Block for a first request, then take more until max_batch or max_wait after the first;
        (batch, whether the stop sentinel was seen)."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                return batch, True
            batch.append(request)
        return batch, False

    def _run_batch(self, batch: list[_Request]) -> None:
        """Embed and search `batch` at once; every live request gets its rows or the error."""
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop cancelled ones
        if not live:
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        try:
            embeddings = np.empty((len(live), self.encoder.embedding_dim), np.float32)  # (B, D)
            for modality in dict.fromkeys(r.modality for r in live):
                rows = [i for i, r in enumerate(live) if r.modality == modality]
                pixels = np.stack([live[i].pixels for i in rows])  # (b, 3, S, S) float32
                embeddings[rows] = self.encoder.embed_pixels(pixels, modality)
            scores, ids = self.index.search(embeddings, max(r.k for r in live))  # (B, k_max) float32 / object
        except Exception as e:  # one bad batch must not kill the worker: every request gets the error
            logger.exception("search batch of %d failed", len(live))
            for request in live:
                request.future.set_exception(e)
            return
        for row, request in enumerate(live):
            request.future.set_result((scores[row, :request.k], ids[row, :request.k]))
