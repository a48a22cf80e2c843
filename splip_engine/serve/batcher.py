"""MicroBatcher: dynamic micro-batching of concurrent search requests behind a bounded queue.

Callers `submit()` the preprocessed images of one request and get a Future; one worker thread
takes queued requests up to `max_batch` images (waiting at most `max_wait_ms` after the first for
others to join; a request is never split across batches), runs one `encoder.embed_pixels` per
modality present (one in the usual all-sketch case) and one `index.search` for the whole batch,
and resolves each Future with that request's rows. A full queue refuses the request at once
(`Overloaded`), so overload sheds load instead of growing latency.

Each batch reads `self.index` once: `swap_index()` takes effect from the next batch, so a request
is answered wholly by one index version and a swap fails none.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from splip_engine.errors import SpLIPError

logger = logging.getLogger(__name__)

_STOP = object()  # queue sentinel: the worker finishes its batch and exits


class ServiceUnavailable(SpLIPError):
    """The request was not run and may be retried later (HTTP 503)."""


class Overloaded(ServiceUnavailable):
    """The batch queue is full; the request was not queued."""


class BatchAnswer(NamedTuple):
    """One request's rows of a batch, all from one index."""

    scores: np.ndarray  # (n, k) float32 descending, -inf where no result
    ids: np.ndarray  # (n, k) object: str, None where no result
    embeddings: np.ndarray  # (n, D) float32, L2-normalised
    index: Any  # the index that answered (its version, path_of)
    batch_size: int  # images in the batch this request ran in


@dataclass
class _Request:
    pixels: np.ndarray  # (n, 3, S, S) float32, preprocessed
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
        self._held: _Request | None = None  # taken from the queue but over the last batch's size: runs next
        self._thread = threading.Thread(target=self._run, name="splip-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def submit(self, pixels: np.ndarray, modality: str, k: int) -> Future:
        """Queue one request of n images, pixels (n, 3, S, S) float32; the Future gives its
        BatchAnswer. Raises Overloaded when the queue is full."""
        request = _Request(pixels, modality, k, Future())
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the search service is shutting down; retry shortly")
            try:
                self._queue.put_nowait(request)
            except queue.Full:
                raise self._overloaded() from None
        return request.future

    def swap_index(self, index: Any) -> Any:
        """Answer from `index` from the next batch on (the running batch finishes on the old one); the old one."""
        old, self.index = self.index, index
        return old

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
        leftover = [self._held] if self._held is not None and not self._thread.is_alive() else []
        while True:
            try:
                leftover.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for request in leftover:
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
        """Block for a first request, then take more until max_batch images or max_wait after the
        first; (batch, whether the stop sentinel was seen)."""
        first, self._held = self._held or self._queue.get(), None
        if first is _STOP:
            return [], True
        batch, images = [first], len(first.pixels)
        deadline = time.monotonic() + self.max_wait_s
        while images < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                return batch, True
            if images + len(request.pixels) > self.max_batch:
                self._held = request
                break
            batch.append(request)
            images += len(request.pixels)
        return batch, False

    def _run_batch(self, batch: list[_Request]) -> None:
        """Embed and search `batch` at once; every live request gets its rows or the error."""
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop cancelled ones
        if not live:
            return
        index = self.index  # one index for the whole batch, even if swap_index() runs meanwhile
        sizes = [len(r.pixels) for r in live]
        ends = np.cumsum(sizes)  # (R,) row after each request's last
        if self._on_batch is not None:
            self._on_batch(int(ends[-1]))
        try:
            embeddings = np.empty((int(ends[-1]), self.encoder.embedding_dim), np.float32)  # (B, D)
            for modality in dict.fromkeys(r.modality for r in live):
                rows = np.concatenate([np.arange(end - size, end) for r, size, end in zip(live, sizes, ends)
                                       if r.modality == modality])
                pixels = np.concatenate([r.pixels for r in live if r.modality == modality])  # (b, 3, S, S) float32
                embeddings[rows] = self.encoder.embed_pixels(pixels, modality)
            scores, ids = index.search(embeddings, max(r.k for r in live))  # (B, k_max) float32 / object
        except Exception as e:  # one bad batch must not kill the worker: every request gets the error
            logger.exception("search batch of %d images failed", int(ends[-1]))
            for request in live:
                request.future.set_exception(e)
            return
        for request, size, end in zip(live, sizes, ends):
            rows = slice(end - size, end)
            request.future.set_result(BatchAnswer(scores[rows, :request.k], ids[rows, :request.k], embeddings[rows],
                                                  index, int(ends[-1])))
