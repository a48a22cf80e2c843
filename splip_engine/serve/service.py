"""SearchService: the request path behind every route (decode pool -> micro-batcher -> answer),
readiness (engine and index loaded and warmed up), and switching to a new index version.

Decoding never runs on the event loop or the batcher thread: raster uploads decode in the decode
pool's threads; vector uploads (SVG, QuickDraw JSON) wait in the render pool's threads on a render
child process (data/sandbox.py) that the decode budget, a client that disconnects, or shutdown
stops. The render pool bounds concurrent renders, and its queue is bounded too (HTTP 503 beyond),
so a flood of render bombs queues behind itself, not in front of photo queries.

`reload()` loads the index directory again in the calling thread while the old version keeps
answering, checks it fits the engine, then hands it to the batcher, which answers from it from
its next batch: no request fails and none mixes versions. A reload that fails keeps the old one.
With a store (`use_store`), hits can carry the metadata `embed` stored per row (reloaded with the index).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.data import sandbox, strokes, svg
from splip_engine.data.images import ImageDecodeError
from splip_engine.errors import SpLIPError
from splip_engine.serve.batcher import BatchAnswer, MicroBatcher, Overloaded, ServiceUnavailable
from splip_engine.serve.errors import RequestError
from splip_engine.serve.metrics import ServeMetrics
from splip_engine.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

_RELOAD_ATTEMPTS = 3  # an update committing while we load may delete the files we were reading: try again


_DISCONNECT_POLL_S = 0.1  # how often a request waiting on its decode checks that its client is still there


class ReloadError(SpLIPError):
    """The index could not be reloaded; the service still answers from the version it had."""


class ClientGone(SpLIPError):
    """The client disconnected while its upload was decoded; the work was stopped."""


class SearchService:
    """Owns the decode pool and the batcher (started and stopped with the app) and the served index."""

    def __init__(self, encoder: Any, index: Any, settings: ServeSettings, index_dir: str | Path | None = None):
        _check_fits(encoder, index)
        self.encoder = encoder
        self.settings = settings
        self.index_dir = None if index_dir is None else Path(index_dir)
        self._index = index  # until start(); then the batcher holds the index being served
        self.batcher: MicroBatcher | None = None
        self.decode_pool: ThreadPoolExecutor | None = None
        self.render_pool: ThreadPoolExecutor | None = None
        self._renders_waiting = 0  # vector uploads queued or rendering (the event loop's count)
        self.warmed_up = threading.Event()
        self._reload_lock = threading.Lock()
        self.store_dir: Path | None = None
        self.metadata: Any = None  # StoreMetadata of store_dir, once use_store() is called
        self.metrics = ServeMetrics(queue_depth=lambda: self.batcher.depth() if self.batcher else 0,
                                    index_facts=lambda: (index_version(self.index), len(self.index)))

    @property
    def index(self) -> Any:
        """The index answering new batches."""
        return self.batcher.index if self.batcher is not None else self._index

    def start(self) -> None:
        s = self.settings
        self.decode_pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="splip-decode")
        self.render_pool = ThreadPoolExecutor(s.render_workers, thread_name_prefix="splip-render")
        self.batcher = MicroBatcher(self.encoder, self._index, s.max_batch, s.max_wait_ms, s.queue_size,
                                    on_batch=self.metrics.observe_batch)
        threading.Thread(target=self._warm_up, name="splip-warm-up", daemon=True).start()
        logger.info("search service started: %s", s)

    def close(self) -> None:
        """Stop at once whatever still runs: queued decodes are dropped, renders killed."""
        self.warmed_up.clear()
        self.render_pool.shutdown(wait=False, cancel_futures=True)
        sandbox.stop_all()
        self.batcher.close()
        self.decode_pool.shutdown(wait=True, cancel_futures=True)
        self.render_pool.shutdown(wait=True)

    def is_live(self) -> bool:
        """The batch worker runs (a process whose worker died should be restarted)."""
        return self.batcher is not None and self.batcher.is_alive()

    def is_ready(self) -> bool:
        """Live, and the engine and index have answered a warm-up batch: send traffic."""
        return self.is_live() and self.warmed_up.is_set()

    def _warm_up(self) -> None:
        """One batch of 1 and one of max_batch per modality through the engine, and a search, so the
        first real requests do not pay for lazy allocation; then ready."""
        start = time.perf_counter()
        size = self.encoder.image_size
        try:
            sandbox.prestart(self.settings.render_workers)
            for modality in ("sketch", "photo"):
                for batch in (1, self.settings.max_batch):
                    embeddings = self.encoder.embed_pixels(np.zeros((batch, 3, size, size), np.float32), modality)
            self.index.search(embeddings, min(10, self.settings.max_k))
        except Exception:  # the engine cannot run: stay not ready, say why
            logger.exception("warm-up failed: the service stays not ready")
            return
        self.warmed_up.set()
        logger.info("warmed up in %.2fs: ready", time.perf_counter() - start)

    async def preprocess(self, images: list[bytes], modality: str,
                         disconnected: Callable[[], Awaitable[bool]] | None = None) -> np.ndarray:
        """Decode and preprocess encoded files off the event loop: (N, 3, S, S) float32; a bad one
        raises ImageDecodeError naming its element (when there are several). `disconnected`: when
        it answers True the decodes are stopped and ClientGone raised."""
        vector = [_is_vector(image) for image in images]
        limit = self.settings.render_queue
        if sum(vector) and self._renders_waiting + sum(vector) > limit:
            raise Overloaded(f"{self._renders_waiting} SVG / drawing renders are waiting (at most {limit}); "
                             "try again shortly")
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        spec = self.encoder.spec
        self._renders_waiting += sum(vector)
        try:
            work = asyncio.gather(*(loop.run_in_executor(self.render_pool if is_vector else self.decode_pool,
                                                         _decode, image, modality, spec, cancel)
                                    for image, is_vector in zip(images, vector)), return_exceptions=True)
            decoded = await self._unless_disconnected(work, disconnected, cancel)
        finally:
            self._renders_waiting -= sum(vector)
        for position, result in enumerate(decoded):
            if isinstance(result, ImageDecodeError):
                raise ImageDecodeError(f"element {position}: {result}" if len(images) > 1 else str(result)) from result
            if isinstance(result, BaseException):
                raise result
        return np.stack(decoded)

    @staticmethod
    async def _unless_disconnected(work: asyncio.Future, disconnected, cancel: threading.Event) -> list:
        """`work`'s results, or ClientGone (after stopping it) once `disconnected()` says so; a
        cancelled request (the server's shutdown window passed) stops its work too."""
        try:
            while disconnected is not None:
                done, _ = await asyncio.wait([work], timeout=_DISCONNECT_POLL_S)
                if done:
                    break
                if await disconnected():
                    raise ClientGone("the client disconnected while its upload was decoded; decoding stopped")
            return await work
        except (ClientGone, asyncio.CancelledError):
            cancel.set()
            raise

    async def search(self, pixels: np.ndarray, modality: str, k: int) -> BatchAnswer:
        """Wait for the batch these pixels (N, 3, S, S) run in."""
        return await asyncio.wrap_future(self.batcher.submit(pixels, modality, k))

    def use_store(self, store_dir: str | Path) -> None:
        """Serve the metadata of the store at `store_dir` with hits that ask for it (read again on reload)."""
        self.store_dir = Path(store_dir)
        self.metadata = self._load_metadata()
        logger.info("metadata of %d rows from %s: %.1f MiB", self.metadata.count, store_dir, self.metadata.nbytes / 2**20)

    def check_metadata(self) -> None:
        """RequestError(400) unless a store's metadata is served."""
        if self.metadata is None:
            raise RequestError(400, "hit metadata was asked for, but this server was started without --store "
                                    "(the embedding store the index was built from)")

    def hit_records(self, ids: np.ndarray) -> list[dict[str, str | None] | None]:
        """The stored record of each id in `ids` (any shape, flattened; None: no result / not in the store)."""
        self.check_metadata()
        return self.metadata.lookup(ids.ravel().tolist())

    def reload(self) -> dict[str, Any]:
        """Load the index directory again and serve it from the next batch; what changed.
        ReloadError (old version kept) if there is no directory or it does not load or fit."""
        from splip_engine.index import GalleryIndex

        if self.index_dir is None:
            raise ReloadError("this service was started without an index directory; nothing to reload")
        with self._reload_lock:
            old = self.index
            try:
                for attempt in range(1, _RELOAD_ATTEMPTS + 1):
                    try:
                        index = GalleryIndex.load(self.index_dir)
                        break
                    except SpLIPError:
                        if attempt == _RELOAD_ATTEMPTS:
                            raise
                        time.sleep(0.2)
                index.check_compatible(self.encoder.manifest)
                _check_fits(self.encoder, index)
                metadata = self._load_metadata()
            except SpLIPError as e:
                self.metrics.observe_reload(ok=False)
                raise ReloadError(f"reload of {self.index_dir} failed ({e}); still serving version "
                                  f"{index_version(old)}") from e
            self.batcher.swap_index(index)
            self.metadata = metadata
            self.metrics.observe_reload(ok=True)
        change = {"version": index.version, "previous_version": index_version(old), "size": len(index),
                  "previous_size": len(old), "kind": index.kind}
        logger.info("index reloaded: %s", change)
        return change

    def _load_metadata(self) -> Any:
        from splip_engine.index.metadata import StoreMetadata

        return StoreMetadata.load(self.store_dir) if self.store_dir is not None else None

    def describe(self) -> dict[str, Any]:
        """Engine and index facts for /healthz."""
        manifest, index = self.encoder.manifest, self.index
        return {
            "ready": self.is_ready(),
            "engine": {"backend": self.encoder.backend, "embedding_dim": self.encoder.embedding_dim,
                       "image_size": self.encoder.image_size, "precision": manifest.get("precision"),
                       "clip_model": manifest.get("model_config", {}).get("clip_model"),
                       "engine_hash": manifest.get("engine_hash")},
            "index": {"size": len(index), "dim": index.dim, "kind": getattr(index, "kind", None),
                      "version": index_version(index)},
            "queue_depth": self.batcher.depth() if self.batcher else 0,
            "settings": {"max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms,
                         "queue_size": self.settings.queue_size, "max_body_bytes": self.settings.max_body_bytes,
                         "max_k": self.settings.max_k},
        }


def _decode(image: bytes, modality: str, spec, cancel: threading.Event) -> np.ndarray:
    """One upload's encoder input, in a pool thread; renders stop once `cancel` is set."""
    from splip_engine.data.transforms import preprocess

    if cancel.is_set():
        raise sandbox.RenderCancelled("the request was abandoned before its decode started")
    try:
        with sandbox.cancelled_by(cancel):
            return preprocess(image, modality, spec)
    except sandbox.RenderCancelled as e:
        raise ServiceUnavailable(f"decoding stopped: {e}") from e


def _is_vector(image: bytes) -> bool:
    """Whether an upload is a vector sketch (rendered in a child process) rather than a raster image."""
    head = bytes(image[:1024])
    return svg.looks_like_svg(head) or strokes.looks_like_drawing(head)


def index_version(index: Any) -> int:
    """The index's version (1 for an index object that does not count them)."""
    return int(getattr(index, "version", 1))


def _check_fits(encoder: Any, index: Any) -> None:
    if encoder.embedding_dim != index.dim:
        raise SpLIPError(f"engine embeds to {encoder.embedding_dim} dims but the index holds {index.dim}: "
                         "build the index with this engine")
