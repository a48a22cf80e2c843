"""The app's exception handlers: every refusal is a JSON error body in the shape its path's protocol
parses (`{"detail"}`, or `{"error"}` under /v2) with the right status; nothing leaks a traceback."""
from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from splip_engine.data.images import ImageDecodeError
from splip_engine.serve.batcher import ServiceUnavailable
from splip_engine.serve.errors import RequestError, error_body
from splip_engine.serve.service import ClientGone

RETRY_AFTER_S = 1  # what a 503 tells clients to wait before retrying
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that left mid-request: not a server error


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of every exception a route may raise."""

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
    @app.exception_handler(ClientGone)
    async def client_left(request: Request, exc: Exception) -> JSONResponse:
        return error(request, CLIENT_CLOSED_REQUEST, "the client disconnected before sending the whole request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error(request, 500, f"internal error ({type(exc).__name__}); see the server log")

