"""The Open Inference Protocol (KServe v2) over HTTP: health, server and model metadata, and
infer for the one model `splip`, whose version is the index version it serves. Infer takes the
same path as POST /search (decode pool, micro-batcher, limits); errors are `{"error": ...}`."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from splip_engine.serve.bodies import inflate, read_body
from splip_engine.serve.infer import SERVER_NAME, SERVER_VERSION, check_model, describe_model, run_infer
from splip_engine.serve.observe import request_facts
from splip_engine.serve.service import SearchService, index_version
from splip_engine.serve.tensors import MODEL_NAME, encode_infer_response, parse_infer_request

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
PATHS = frozenset({"/v2", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}",
                   f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/infer"})
"""Metric labels of the v2 routes (versioned paths count as `other`)."""


def v2_router(service: SearchService) -> APIRouter:
    """The /v2 routes over `service`."""
    router = APIRouter(prefix="/v2")
    settings = service.settings

    def status_only(ok: bool, reason: str) -> JSONResponse:
        return JSONResponse({} if ok else {"error": reason}, status_code=200 if ok else 503)

    @router.get("")
    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    @router.get("/health/live")
    async def live() -> JSONResponse:
        return status_only(service.is_live(), "the batch worker is not running")

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        return status_only(service.is_ready(), "not ready: warming up, or the batch worker is not running")

    @router.get("/models/{name}")
    @router.get("/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None) -> dict:
        check_model(service, name, version)
        return describe_model(service)

    @router.get("/models/{name}/ready")
    @router.get("/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        check_model(service, name, version)
        return status_only(service.is_ready(), f"model {MODEL_NAME!r} is not ready")

    @router.post("/models/{name}/infer")
    @router.post("/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        check_model(service, name, version)
        service.batcher.raise_if_full()  # shed load before reading and decoding the upload
        body = inflate(await read_body(request, settings.max_body_bytes), request.headers.get("content-encoding"),
                       settings.max_body_bytes)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH), service.encoder.image_size,
                                     settings.max_batch, settings.max_k)
        answer, metadata = await run_infer(service, parsed, request_facts(request.scope), request.is_disconnected)
        content, header_length = encode_infer_response(parsed, index_version(answer.index), answer.embeddings,
                                                       answer.ids, answer.scores, metadata)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})

    return router
