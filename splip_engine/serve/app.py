"""create_app: the FastAPI app of the sketch -> photo search service.

POST /search takes an image (multipart field `image`, or a raw body: image/* (SVG included),
application/octet-stream, or QuickDraw strokes as application/json / application/x-ndjson; all go
to the same decoder), decodes and preprocesses it in a thread pool (bad images -> 400 before
touching a batch), queues it on the MicroBatcher (full queue -> 503 with Retry-After) and
answers its top-k as JSON. The Open Inference Protocol lives under /v2 (v2.py). GET /healthz
describes the engine and index, GET /metrics is Prometheus text, POST /admin/reload switches
to the index directory's current version; the draw-to-search page is at / (page.py). With a
token every path but /v2/health/live and the page's own files needs it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from splip_engine.config import MODALITIES
from splip_engine.data.images import ImageDecodeError
from splip_engine.errors import SpLIPError
from splip_engine.serve.batcher import ServiceUnavailable
from splip_engine.serve.metrics import CONTENT_TYPE
from splip_engine.serve.service import ReloadError, SearchService, index_version
from splip_engine.serve.settings import ServeSettings

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    from splip_engine.serve.auth import OPEN_PATHS, BearerAuth
    from splip_engine.serve.bodies import read_body
    from splip_engine.serve.errors import RequestError, error_body
    from splip_engine.serve.observe import RequestObserver, request_facts
    from splip_engine.serve.page import PAGE_FILES, page_router
    from splip_engine.serve.page import PATHS as PAGE_PATHS
    from splip_engine.serve.v2 import PATHS as V2_PATHS
    from splip_engine.serve.v2 import v2_router
except ImportError as e:  # optional dependency: the `serve` extra
    raise SpLIPError("serving needs FastAPI and uvicorn: pip install 'splip-engine[serve]'") from e

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # what a 503 tells clients to wait before retrying
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that left mid-request: not a server error
_RAW_TYPES = ("image/", "application/octet-stream", "application/json", "application/x-ndjson")
_PATHS = frozenset({"/search", "/healthz", "/metrics", "/admin/reload"}) | V2_PATHS | PAGE_PATHS  # metric labels; others: "other"


def create_app(encoder: Any, index: Any, settings: ServeSettings | None = None, *, token: str | None = None,
               index_dir: str | Path | None = None) -> FastAPI:
    """The search app over a runtime Encoder and a GalleryIndex of the same embedding dim.

    token: the bearer token every path but liveness needs (None: no authentication);
    index_dir: where `POST /admin/reload` (and the server's SIGHUP) reload the index from.
    The batcher thread and the decode pool start with the app (ASGI lifespan) and stop with it.
    """
    settings = settings or ServeSettings()
    service = SearchService(encoder, index, settings, index_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="SpLIP sketch -> photo search", lifespan=lifespan)
    if token is not None:
        app.add_middleware(BearerAuth, token=token, open_paths=OPEN_PATHS | PAGE_FILES)  # the page's files hold no data
    app.add_middleware(RequestObserver, metrics=service.metrics, metric_paths=_PATHS)  # outermost: sees 401s too
    app.state.service = service
    app.include_router(v2_router(service))
    app.include_router(page_router(service))  # the draw-to-search page at / and /thumbnail

    @app.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        """Top-k gallery photos for one uploaded image."""
        start = time.perf_counter()
        service.batcher.raise_if_full()  # shed load before reading and decoding the upload
        image, fields = await _read_image(request, settings.max_body_bytes)
        k = _parse_k(fields.get("k"), settings.max_k)
        modality = _parse_modality(fields.get("modality"))
        facts = request_facts(request.scope)
        facts["images"] = 1
        answer = await service.search(await service.preprocess([image], modality), modality, k)
        facts.update(batch_size=answer.batch_size, index_version=index_version(answer.index))
        return {"results": _hits(answer.scores[0], answer.ids[0], answer.index), "k": k, "modality": modality,
                "index_version": index_version(answer.index),
                "latency_ms": round((time.perf_counter() - start) * 1000, 3)}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness (503 when the batch worker is not running) plus what is being served."""
        alive = service.is_live()
        return JSONResponse({"status": "ok" if alive else "batch worker stopped", **service.describe()},
                            status_code=200 if alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/admin/reload")
    async def reload() -> dict[str, Any]:
        """Switch to the index directory's current version (as SIGHUP does); 409 keeps the old one."""
        try:
            return await asyncio.to_thread(service.reload)
        except ReloadError as e:
            raise RequestError(409, str(e)) from e

    def error(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, message), status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return error(request, exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(request, 422, f"invalid request: {exc.errors()}")

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return error(request, 503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(ImageDecodeError)
    async def bad_image(request: Request, exc: ImageDecodeError) -> JSONResponse:
        return error(request, 400, f"bad image: {exc}")

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return error(request, CLIENT_CLOSED_REQUEST, "the client disconnected before sending the whole request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error(request, 500, f"internal error ({type(exc).__name__}); see the server log")

    return app


def _hits(scores, ids, index) -> list[dict[str, Any]]:
    """Ranked hits of one query, scores (k,) float32 and ids (k,) object, with paths the index knows."""
    path_of = getattr(index, "path_of", None)
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


async def _read_image(request: Request, limit: int) -> tuple[bytes, Mapping[str, str]]:
    """The uploaded image bytes and the k / modality fields (form fields, else query params)."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(_RAW_TYPES):
        raise RequestError(415, f"Content-Type {content_type or '(none)'!r} is not supported: send multipart/form-data "
                                "with the file in field 'image', or the raw image with Content-Type image/* "
                                "(QuickDraw strokes: application/json or application/x-ndjson)")
    body = await read_body(request, limit)
    if multipart:
        return await _parse_multipart(request, body)
    return body, request.query_params


async def _parse_multipart(request: Request, body: bytes) -> tuple[bytes, Mapping[str, str]]:
    """Parse an already size-checked multipart body; field `image` must be a file."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except StarletteHTTPException as e:  # starlette's 400 for a multipart body it cannot parse
        raise RequestError(400, f"malformed multipart body: {e.detail}") from e
    try:
        upload = form.get("image")
        if upload is None:
            raise RequestError(422, "missing form field 'image': upload the query image as the multipart file field 'image'")
        if isinstance(upload, str):
            raise RequestError(422, "form field 'image' must be a file upload, not a text value")
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
        raise RequestError(422, f"k={value!r} is not an integer; pass k in 1..{max_k}") from None
    if not 1 <= k <= max_k:
        raise RequestError(422, f"k={k} is out of range: pass k in 1..{max_k} (the server's max_k)")
    return k


def _parse_modality(value: str | None) -> str:
    """The query's modality (default sketch), 422 unless one of MODALITIES."""
    if value is None:
        return "sketch"
    if value not in MODALITIES:
        raise RequestError(422, f"modality={value!r} is not supported; pass one of {list(MODALITIES)}")
    return value
