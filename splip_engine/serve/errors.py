"""Error bodies of the service: `{"detail": ...}` on its own routes, `{"error": ...}` (the Open
Inference Protocol's error object) under /v2, so every client gets errors in the shape it parses."""
from __future__ import annotations

from splip_engine.errors import SpLIPError

V2_PREFIX = "/v2"


class RequestError(SpLIPError):
    """A request the service refuses with `status` (4xx); the message says what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_body(path: str, message: str) -> dict[str, str]:
    """The JSON error body for a request to `path`."""
    return {"error": message} if path == V2_PREFIX or path.startswith(V2_PREFIX + "/") else {"detail": message}
