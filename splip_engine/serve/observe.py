"""RequestObserver: the ASGI middleware every request passes first. It gives the request an id
(a well-formed incoming X-Request-ID, else a new one) echoed in the X-Request-ID response header,
counts the response in the metrics, and writes one JSON access-log line per request.

The access line holds: ts, request_id, method, path (never the query string), status,
latency_ms, bytes_in, client, and where the request reached the batcher images, batch_size and
index_version. Never a header (so never the token) and never a body (so never the image).
Routes add their part through `request_facts(scope)`.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from splip_engine.serve.metrics import ServeMetrics

ACCESS_LOGGER = "splip_engine.serve.access"
REQUEST_ID_HEADER = "x-request-id"
_GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")  # printable, no spaces: safe in a log line
_SCOPE_KEY = "splip.request"

access_log = logging.getLogger(ACCESS_LOGGER)


def request_id(incoming: str) -> str:
    """The client's request id when well formed, else a new one."""
    return incoming if _GOOD_REQUEST_ID.match(incoming) else uuid.uuid4().hex


def log_access(request_id: str, method: str, path: str, status: int, seconds: float, bytes_in: int | None,
               client: str | None, facts: dict[str, Any], **extra: Any) -> None:
    """Write one JSON access-log line (when the access log is on)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(json.dumps({
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id, "method": method, "path": path, "status": status,
            "latency_ms": round(seconds * 1000, 3), "bytes_in": bytes_in, "client": client,
            **{k: facts.get(k) for k in ("images", "batch_size", "index_version")}, **extra,
        }))


def request_facts(scope: dict[str, Any]) -> dict[str, Any]:
    """The per-request dict the access log line is made of; routes set images / batch_size / index_version."""
    return scope.setdefault(_SCOPE_KEY, {})


class RequestObserver:
    """Pure ASGI middleware: request id, metrics by `metric_path(path)` and status, access log."""

    def __init__(self, app, metrics: ServeMetrics, metric_paths: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.metric_paths = metric_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        incoming = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = request_id(incoming)
        facts = request_facts(scope)
        facts["request_id"] = rid
        status = 500  # an exception escaping the app becomes a 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REQUEST_ID_HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope["path"] if scope["path"] in self.metric_paths else "other"
            self.metrics.observe_response(path, status, seconds)
            log_access(rid, scope["method"], scope["path"], status, seconds, _content_length(headers),
                       (scope.get("client") or [None])[0], facts)


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length", b"")
    return int(value) if value.isdigit() else None
