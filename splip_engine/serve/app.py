"""create_app: the FastAPI app of the sketch -> photo search service.

Its routes live in modules of their own, registered in `create_app` (ROUTE MODULES below):
search.py (POST /search), v2.py (the Open Inference Protocol under /v2), ops.py (/healthz,
/metrics, /admin/reload), page.py (the draw-to-search page at / and /thumbnail); handlers.py
maps exceptions to error responses. The gRPC transport (grpc_service.py) attaches to the app's
lifespan and shares its SearchService. With a token every path but /v2/health/live and the
page's own files needs it.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from splip_engine.errors import SpLIPError
from splip_engine.serve.service import SearchService
from splip_engine.serve.settings import ServeSettings

try:
    from fastapi import FastAPI

    from splip_engine.serve.auth import OPEN_PATHS, BearerAuth
    from splip_engine.serve.handlers import install_error_handlers
    from splip_engine.serve.observe import RequestObserver
    from splip_engine.serve.ops import ops_router
    from splip_engine.serve.page import PAGE_FILES, page_router
    from splip_engine.serve.page import PATHS as PAGE_PATHS
    from splip_engine.serve.search import search_router
    from splip_engine.serve.v2 import PATHS as V2_PATHS
    from splip_engine.serve.v2 import v2_router
except ImportError as e:  # optional dependency: the `serve` extra
    raise SpLIPError("serving needs FastAPI and uvicorn: pip install 'splip-engine[serve]'") from e

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
    # ROUTE MODULES: each a function (service) -> APIRouter; register new ones here
    for router in (search_router(service), v2_router(service), ops_router(service), page_router(service)):
        app.include_router(router)
    install_error_handlers(app)
    return app
