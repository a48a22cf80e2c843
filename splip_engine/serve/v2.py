"""The Open Inference Protocol (KServe v2) over HTTP: health, server and model metadata, and
infer for the one model `splip`, whose version is the index version it serves. Infer takes the
same path as POST /search (decode pool, micro-batcher, limits); errors are `{"error": ...}`."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from splip_engine._version import __version__
from splip_engine.serve.bodies import inflate, read_body
from splip_engine.serve.errors import RequestError
from splip_engine.serve.observe import request_facts
from splip_engine.serve.service import SearchService, index_version
from splip_engine.serve.tensors import MODEL_NAME, encode_infer_response, model_metadata, parse_infer_request

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
PATHS = frozenset({"/v2", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}",
                   f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/infer"})
"""Metric labels of the v2 routes (versioned paths count as `other`)."""


def v2_router(service: SearchService) -> APIRouter:
    """The /v2 routes over `service`."""
    router = APIRouter(prefix="/v2")
    settings = service.settings

    def check_model(name: str, version: str | None) -> None:
        if name != MODEL_NAME:
            raise RequestError(404, f"model {name!r} is not served here; this server serves {MODEL_NAME!r}")
        serving = str(index_version(service.index))
        if version is not None and version != serving:
            raise RequestError(404, f"model {MODEL_NAME!r} version {version!r} is not served; the served version "
                                    f"is {serving!r} (omit the version to use it)")

    def status_only(ok: bool, reason: str) -> JSONResponse:
        return JSONResponse({} if ok else {"error": reason}, status_code=200 if ok else 503)

    @router.get("")
    async def server_metadata() -> dict:
        return {"name": "splip-engine", "version": __version__, "extensions": EXTENSIONS}

    @router.get("/health/live")
    async def live() -> JSONResponse:
        return status_only(service.is_live(), "the batch worker is not running")

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        return status_only(service.is_ready(), "not ready: warming up, or the batch worker is not running")

    @router.get("/models/{name}")
    @router.get("/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None) -> dict:
        check_model(name, version)
        index = service.index
        return model_metadata(service.encoder.image_size, service.encoder.embedding_dim,
                              index_version(index),
                              {"index_kind": getattr(index, "kind", None), "index_size": len(index),
                               "max_k": settings.max_k, "max_batch": settings.max_batch,
                               "modalities": ["sketch", "photo"], "default_k": min(10, settings.max_k)})

    @router.get("/models/{name}/ready")
    @router.get("/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        check_model(name, version)
        return status_only(service.is_ready(), f"model {MODEL_NAME!r} is not ready")

    @router.post("/models/{name}/infer")
    @router.post("/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        check_model(name, version)
        service.batcher.raise_if_full()  # shed load before reading and decoding the upload
        body = inflate(await read_body(request, settings.max_body_bytes), request.headers.get("content-encoding"),
                       settings.max_body_bytes)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH), service.encoder.image_size,
                                     settings.max_batch, settings.max_k)
        facts = request_facts(request.scope)
        facts["images"] = parsed.count
        pixels = parsed.pixels if parsed.pixels is not None else await service.preprocess(
            parsed.images, parsed.modality, request.is_disconnected)
        answer = await service.search(pixels, parsed.modality, parsed.k)
        served = index_version(answer.index)
        facts.update(batch_size=answer.batch_size, index_version=served)
        content, header_length = encode_infer_response(parsed, served, answer.embeddings, answer.ids, answer.scores)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})

    return router
