"""Bearer-token authentication of the service: where the token comes from, the refusal to expose
an unauthenticated server beyond loopback, and the ASGI middleware that checks every request.

Every path but liveness (`/v2/health/live`, so a load balancer can tell a hung process from one
it may not query) needs `Authorization: Bearer <token>`. The check compares SHA-256 digests with
`hmac.compare_digest`: constant time, and the token's length does not leak either. A refusal is
401 with `WWW-Authenticate: Bearer realm="splip"` (RFC 6750); the token is never logged.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from splip_engine.errors import SpLIPError
from splip_engine.serve.errors import error_body

TOKEN_ENV = "SPLIP_AUTH_TOKEN"
MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/v2/health/live"})
REALM = "splip"


def load_token(token_file: str | Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The service token from `token_file` (its first line, stripped), else from $SPLIP_AUTH_TOKEN,
    else None; SpLIPError if unreadable or shorter than MIN_TOKEN_CHARS."""
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SpLIPError(f"cannot read the auth token file {token_file} ({e}); pass a readable text file") from e
        token, source = (lines[0].strip() if lines else ""), f"the auth token file {token_file}"
    elif environ.get(TOKEN_ENV):
        token, source = environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise SpLIPError(f"{source} holds a token of {len(token)} characters (or with spaces); use at least "
                         f"{MIN_TOKEN_CHARS} random characters, e.g. `openssl rand -hex 32`")
    return token


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_exposure(host: str, token: str | None, no_auth: bool) -> None:
    """Refuse to serve `host` beyond loopback without a token, unless `no_auth` says so on purpose."""
    if token is not None and no_auth:
        raise SpLIPError("--no-auth and an auth token (--auth-token-file or $SPLIP_AUTH_TOKEN) contradict each other; "
                         "pass one of them")
    if token is None and not no_auth and not is_loopback(host):
        raise SpLIPError(f"refusing to serve on {host} without authentication: anyone who can reach that address "
                         f"could query the gallery; pass --auth-token-file FILE (or set ${TOKEN_ENV}), or --no-auth "
                         "if something in front of the server authenticates")


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).digest()


def bearer_matches(header: bytes, expected_digest: bytes) -> bool:
    """Whether an Authorization value `header` is "Bearer <the token whose digest is expected_digest>"."""
    scheme, _, credentials = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(_digest(credentials.strip()), expected_digest)


def token_digest(token: str) -> bytes:
    """What `bearer_matches` compares against (the token itself is not kept)."""
    return _digest(token)


class BearerAuth:
    """Pure ASGI middleware: 401 for any HTTP request but `open_paths` without the right bearer token."""

    def __init__(self, app, token: str, open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self._expected = token_digest(token)
        self._open_paths = open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open_paths:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if bearer_matches(header, self._expected):
            await self.app(scope, receive, send)
            return
        if not header:
            message, challenge = "authentication required: send Authorization: Bearer <token>", f'Bearer realm="{REALM}"'
        else:
            message = "invalid token: the Authorization header does not hold this server's bearer token"
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
        body = json.dumps(error_body(scope["path"], message)).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": body})
