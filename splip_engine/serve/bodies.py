"""Request bodies under a size limit: read (413 as soon as the limit is passed, declared or
streamed) and, where a client compressed it (Content-Encoding gzip / deflate, as tritonclient's
request_compression_algorithm does), inflated under the same limit (no decompression bombs)."""
from __future__ import annotations

import zlib

from starlette.requests import Request

from splip_engine.serve.errors import RequestError

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": None}


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, _too_large(int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, _too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def inflate(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`body` decompressed per its Content-Encoding (gzip, deflate, identity); 415 for another
    coding, 400 if corrupt, 413 if it inflates past `limit` bytes."""
    coding = (content_encoding or "identity").strip().lower()
    if coding not in _WBITS:
        raise RequestError(415, f"Content-Encoding {coding!r} is not supported; send gzip, deflate or identity")
    if _WBITS[coding] is None:
        return body
    inflater = zlib.decompressobj(_WBITS[coding])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise RequestError(400, f"the {coding} request body is corrupt ({e})") from e
    if len(out) > limit:
        raise RequestError(413, _too_large(len(out), limit) + " (after decompression)")
    if not inflater.eof:
        raise RequestError(400, f"the {coding} request body is truncated")
    return out


def _too_large(size: int, limit: int) -> str:
    return (f"request body of {size:,} bytes or more is over the limit of {limit:,} bytes (max_body_bytes); "
            "send a smaller image")
