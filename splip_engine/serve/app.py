"""create_app: the FastAPI app of the sketch -> photo search service.

POST /search takes an image (multipart field `image`, or a raw body with Content-Type image/*),
decodes and preprocesses it in a thread pool (bad images -> 400 before touching a batch), queues
it on the MicroBatcher (full queue -> 503 with Retry-After) and answers its top-k as JSON.
GET /healthz describes the engine and index; GET /metrics is Prometheus text.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from splip_engine.config import MODALITIES
from splip_engine.data.images import ImageDecodeError
from splip_engine.errors import SpLIPError
from splip_engine.serve.batcher import MicroBatcher, ServiceUnavailable
from splip_engine.serve.metrics import CONTENT_TYPE, ServeMetrics
from splip_engine.serve.settings import ServeSettings

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ImportError as e:  # optional dependency: the `serve` extra
    raise SpLIPError("serving needs FastAPI and uvicorn: pip install 'splip-engine[serve]'") from e

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # what a 503 tells clients to wait before retrying
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that left mid-request: not a server error
_RAW_TYPES = ("image/", "application/octet-stream")
_PATHS = ("/search", "/healthz", "/metrics")  # metric labels; any other path counts as "other"


def create_app(encoder: Any, index: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The search app over a runtime Encoder and a GalleryIndex of the same embedding dim.

    The batcher thread and the decode pool start with the app (ASGI lifespan) and stop with it.
    """
    settings = settings or ServeSettings()
    if encoder.embedding_dim != index.dim:
        raise SpLIPError(f"engine embeds to {encoder.embedding_dim} dims but the index holds {index.dim}: "
                         "build the index with this engine")
    service = _SearchService(encoder, index, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="SpLIP sketch -> photo search", lifespan=lifespan)
    app.add_middleware(_MetricsMiddleware, metrics=service.metrics)
    app.state.service = service

    @app.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        """Top-k gallery photos for one uploaded image."""
        start = time.perf_counter()
        service.batcher.raise_if_full()  # shed load before reading and decoding the upload
        image, fields = await _read_image(request, settings.max_body_bytes)
        k = _parse_k(fields.get("k"), settings.max_k)
        modality = _parse_modality(fields.get("modality"))
        results = await service.search(image, modality, k)
        return {"results": results, "k": k, "modality": modality,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3)}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness (503 when the batch worker is not running) plus what is being served."""
        alive = service.batcher is not None and service.batcher.is_alive()
        return JSONResponse({"status": "ok" if alive else "batch worker stopped", **service.describe()},
                            status_code=200 if alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(ImageDecodeError)
    async def bad_image(request: Request, exc: ImageDecodeError) -> JSONResponse:
        return JSONResponse({"detail": f"bad image: {exc}"}, status_code=400)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return JSONResponse({"detail": "the client disconnected before sending the whole request"},
                            status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    return app


class _SearchService:
    """The request path behind the routes: decode pool -> micro-batcher -> JSON-ready results."""

    def __init__(self, encoder: Any, index: Any, settings: ServeSettings):
        self.encoder = encoder
        self.index = index
        self.settings = settings
        self.batcher: MicroBatcher | None = None
        self.decode_pool: ThreadPoolExecutor | None = None
        self.metrics = ServeMetrics(queue_depth=lambda: self.batcher.depth() if self.batcher else 0)

    def start(self) -> None:
        s = self.settings
        self.decode_pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="splip-decode")
        self.batcher = MicroBatcher(self.encoder, self.index, s.max_batch, s.max_wait_ms, s.queue_size,
                                    on_batch=self.metrics.observe_batch)
        logger.info("search service started: %s", s)

    def close(self) -> None:
        self.batcher.close()
        self.decode_pool.shutdown(wait=True)

    async def search(self, image: bytes, modality: str, k: int) -> list[dict[str, Any]]:
        """Decode off the event loop, then wait for this image's batch; ranked hits."""
        from splip_engine.data.transforms import preprocess

        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self.decode_pool, preprocess, image, modality, self.encoder.spec)
        scores, ids = await asyncio.wrap_future(self.batcher.submit(pixels, modality, k))  # (k,) float32, (k,) object
        path_of = getattr(self.index, "path_of", None)
        hits = []
        for rank, (score, id_) in enumerate(zip(scores, ids), start=1):
            if id_ is None:  # fewer than k photos in the gallery
                break
            hit = {"rank": rank, "id": str(id_), "score": float(score)}
            path = path_of(id_) if path_of else None
            if path is not None:
                hit["path"] = str(path)
            hits.append(hit)
        return hits

    def describe(self) -> dict[str, Any]:
        """Engine and index facts for /healthz."""
        manifest = self.encoder.manifest
        return {
            "engine": {"backend": self.encoder.backend, "embedding_dim": self.encoder.embedding_dim,
                       "image_size": self.encoder.image_size, "precision": manifest.get("precision"),
                       "clip_model": manifest.get("model_config", {}).get("clip_model"),
                       "engine_hash": manifest.get("engine_hash")},
            "index": {"size": len(self.index), "dim": self.index.dim, "kind": getattr(self.index, "kind", None)},
            "queue_depth": self.batcher.depth() if self.batcher else 0,
            "settings": {"max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms,
                         "queue_size": self.settings.queue_size, "max_body_bytes": self.settings.max_body_bytes,
                         "max_k": self.settings.max_k},
        }


class _MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP response by path and status, timing it."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500

        async def send_and_record_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            path = scope["path"] if scope["path"] in _PATHS else "other"
            self.metrics.observe_response(path, status, time.perf_counter() - start)


async def _read_image(request: Request, limit: int) -> tuple[bytes, Mapping[str, str]]:
    """The uploaded image bytes and the k / modality fields (form fields, else query params)."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(_RAW_TYPES):
        raise HTTPException(415, f"Content-Type {content_type or '(none)'!r} is not supported: send multipart/form-data "
                                 "with the file in field 'image', or the raw image with Content-Type image/*")
    body = await _read_body(request, limit)
    if multipart:
        return await _parse_multipart(request, body)
    return body, request.query_params


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large(int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, _too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (f"request body of {size:,} bytes or more is over the limit of {limit:,} bytes (max_body_bytes); "
            "send a smaller image")


async def _parse_multipart(request: Request, body: bytes) -> tuple[bytes, Mapping[str, str]]:
    """Parse an already size-checked multipart body; field `image` must be a file."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except StarletteHTTPException as e:  # starlette's 400 for a multipart body it cannot parse
        raise HTTPException(400, f"malformed multipart body: {e.detail}") from e
    try:
        upload = form.get("image")
        if upload is None:
            raise HTTPException(422, "missing form field 'image': upload the query image as the multipart file field 'image'")
        if isinstance(upload, str):
            raise HTTPException(422, "form field 'image' must be a file upload, not a text value")
        image = await upload.read()
        texts = {name: value for name, value in form.multi_items() if isinstance(value, str)}
        fields = {**request.query_params, **texts}
        return image, fields
    finally:
        await form.close()


def _parse_k(value: str | None, max_k: int) -> int:
    """k from a form field or query param (default 10), 422 unless an int in 1..max_k."""
    if value is None:
        return min(10, max_k)
    try:
        k = int(value)
    except ValueError:
        raise HTTPException(422, f"k={value!r} is not an integer; pass k in 1..{max_k}") from None
    if not 1 <= k <= max_k:
        raise HTTPException(422, f"k={k} is out of range: pass k in 1..{max_k} (the server's max_k)")
    return k


def _parse_modality(value: str | None) -> str:
    """The query's modality (default sketch), 422 unless one of MODALITIES."""
    if value is None:
        return "sketch"
    if value not in MODALITIES:
        raise HTTPException(422, f"modality={value!r} is not supported; pass one of {list(MODALITIES)}")
    return value
