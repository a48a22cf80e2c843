"""The draw-to-search page at `/` (plain HTML / JS / CSS shipped in serve/static/, no build step,
nothing from a CDN) `GET /thumbnail?id=` (the gallery photo of an id of the served index,
resized and cached: thumbnails.py) and `GET /page/config` (what the page may ask for).

The page's three files hold no data and are open even when the server needs a token (a browser
loads them before it can send one: auth.OPEN_PATHS); the page then asks for the token once and
sends it as `Authorization: Bearer` on every search and thumbnail request (thumbnails are fetched
and shown as blob: URLs, so the token is never in a URL). It posts the drawing to `/search` as
QuickDraw strokes JSON (rendered by data/strokes.py, as an .ndjson line would be) or as a PNG.
"""
from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from splip_engine.serve.errors import RequestError
from splip_engine.serve.thumbnails import ThumbnailError, Thumbnails

ASSETS = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
"""The page's files under /static/, by name: nothing else under /static/ is served."""
PAGE_FILES = frozenset({"/", *(f"/static/{name}" for name in ASSETS)})
"""Paths of the page itself (open without a token: they hold no data)."""
PATHS = PAGE_FILES | {"/thumbnail", "/page/config"}
"""Metric labels of this router's paths."""
_MAX_ID_CHARS = 1024


def _asset(name: str) -> bytes:
    return (resources.files("splip_engine.serve") / "static" / name).read_bytes()


def page_router(service: Any) -> APIRouter:
    """The page and the thumbnail route over `service` (its current index: a reload counts)."""
    router = APIRouter()
    thumbnails = Thumbnails(lambda: service.index, lambda: service.metadata)
    files = {name: _asset(name) for name in ("index.html", *ASSETS)}  # a few KB, read once

    @router.get("/", include_in_schema=False)
    async def page() -> Response:
        """The draw-to-search page."""
        return Response(files["index.html"], media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    @router.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        """The page's script and style sheet (by name from ASSETS, never a path)."""
        if name not in ASSETS:
            raise RequestError(404, f"no page file {name!r}")
        return Response(files[name], media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    @router.get("/page/config")
    async def config() -> dict[str, Any]:
        """What the page may ask of this server: hit metadata (a store is served) and the largest k."""
        return {"metadata": service.metadata is not None, "max_k": service.settings.max_k}

    @router.get("/thumbnail")
    async def thumbnail(id: str = "") -> Response:
        """JPEG thumbnail of the gallery photo `id` (404 unless the served index holds that id)."""
        if not id or len(id) > _MAX_ID_CHARS:
            raise RequestError(422, f"pass the id of a gallery photo as ?id= (1..{_MAX_ID_CHARS} characters)")
        try:
            data = await asyncio.to_thread(thumbnails.get, id)
        except ThumbnailError as e:
            raise RequestError(500, f"gallery photo {id!r} is in the index but unreadable: {e}") from e
        if data is None:
            raise RequestError(404, f"no gallery photo with id {id!r} in the served index")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return router
