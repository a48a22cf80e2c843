"""POST /search: top-k gallery photos for one uploaded image.

It takes an image (multipart field `image`, or a raw body: image/* (SVG included),
application/octet-stream, or QuickDraw strokes as application/json / application/x-ndjson; all go
to the same decoder) with `k`, `modality` and `metadata` (form fields, else query parameters),
decodes and preprocesses it in a thread pool (bad images -> 400 before touching a batch), queues it
on the MicroBatcher (full queue -> 503 with Retry-After) and answers its top-k as JSON; with
metadata=true (and a store served) each hit carries its stored record under "metadata".
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from splip_engine.config import MODALITIES
from splip_engine.serve.bodies import read_body
from splip_engine.serve.errors import RequestError
from splip_engine.serve.observe import request_facts
from splip_engine.serve.service import SearchService, index_version

_RAW_TYPES = ("image/", "application/octet-stream", "application/json", "application/x-ndjson")


def search_router(service: SearchService) -> APIRouter:
    """The /search route over `service`."""
    router = APIRouter()
    settings = service.settings

    @router.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        """Top-k gallery photos for one uploaded image."""
        start = time.perf_counter()
        service.batcher.raise_if_full()  # shed load before reading and decoding the upload
        image, fields = await _read_image(request, settings.max_body_bytes)
        k = _parse_k(fields.get("k"), settings.max_k)
        modality = _parse_modality(fields.get("modality"))
        with_metadata = _parse_flag(fields.get("metadata"), "metadata")
        if with_metadata:
            service.check_metadata()
        facts = request_facts(request.scope)
        facts["images"] = 1
        pixels = await service.preprocess([image], modality, request.is_disconnected)
        answer = await service.search(pixels, modality, k)
        facts.update(batch_size=answer.batch_size, index_version=index_version(answer.index))
        records = service.hit_records(answer.ids[0]) if with_metadata else None
        return {"results": _hits(answer.scores[0], answer.ids[0], answer.index, records), "k": k, "modality": modality,
                "index_version": index_version(answer.index),
                "latency_ms": round((time.perf_counter() - start) * 1000, 3)}

    return router


def _hits(scores, ids, index, records: list | None = None) -> list[dict[str, Any]]:
    """Ranked hits of one query, scores (k,) float32 and ids (k,) object, with paths the index knows
    and, when given, each hit's stored record (path, key, caption, json) under "metadata"."""
    path_of = getattr(index, "path_of", None)
    hits = []
    for rank, (score, id_) in enumerate(zip(scores, ids), start=1):
        if id_ is None:  # fewer than k photos in the gallery
            break
        hit = {"rank": rank, "id": str(id_), "score": float(score)}
        path = path_of(id_) if path_of else None
        if path is not None:
            hit["path"] = str(path)
        if records is not None:
            record = records[rank - 1]
            hit["metadata"] = None if record is None else {k: v for k, v in record.items() if k != "id"}
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


def _parse_flag(value: str | None, name: str) -> bool:
    """A true/false form field or query param (default false), 422 otherwise."""
    if value is None:
        return False
    if value.lower() not in ("true", "false", "1", "0"):
        raise RequestError(422, f"{name}={value!r} is not a boolean; pass {name}=true or {name}=false")
    return value.lower() in ("true", "1")
