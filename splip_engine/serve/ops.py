"""Operations routes: GET /healthz (liveness and what is served), GET /metrics (Prometheus text),
POST /admin/reload (switch to the index directory's current version, as SIGHUP does)."""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from splip_engine.serve.errors import RequestError
from splip_engine.serve.metrics import CONTENT_TYPE
from splip_engine.serve.service import ReloadError, SearchService


def ops_router(service: SearchService) -> APIRouter:
    """The /healthz, /metrics and /admin/reload routes over `service`."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness (503 when the batch worker is not running) plus what is being served."""
        alive = service.is_live()
        return JSONResponse({"status": "ok" if alive else "batch worker stopped", **service.describe()},
                            status_code=200 if alive else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @router.post("/admin/reload")
    async def reload() -> dict[str, Any]:
        """Switch to the index directory's current version (as SIGHUP does); 409 keeps the old one."""
        try:
            return await asyncio.to_thread(service.reload)
        except ReloadError as e:
            raise RequestError(409, str(e)) from e

    return router
