"""The HTTP service under load and abuse: a real `splip-engine serve` process on 127.0.0.1 (ONNX
Runtime engine, saved index), 2,000 requests from 32 concurrent clients within a time limit with
no wrong answer (each compared with the Python API for its image), no 5xx but 503 back-pressure,
bounded server RSS, and p50/p99 latency printed; then slow uploads, clients that disconnect
mid-upload, oversized bodies, malformed multipart and bad k: each a 4xx (or the right answer,
for a slow client), and the server answers correctly afterwards, having logged no traceback."""
from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serve.helpers import make_png, reference_search, wait_until
from splip_engine.index import GalleryIndex


N_REQUESTS = 2000  # ~12 s on 2 idle cores, ~26 s on 2 cores shared with another job
N_CLIENTS = 32
LOAD_TIME_LIMIT_S = 60.0  # the limit catches a stall, not a slow machine
MAX_BODY_MB = 1
K_MAX = 20
TIMEOUT = httpx.Timeout(30.0)


def _photo_png(seed: int) -> bytes:
    """A 192 x 192 noise PNG (~110 KB): a leak of request bodies shows in the server's RSS."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


IMAGES = [make_png(seed) for seed in range(16)] + [_photo_png(seed) for seed in range(16)]


class Server:
    """A `splip-engine serve` subprocess; its log goes to a file."""

    def __init__(self, tiny_engine_dir: Path, index_dir: Path, log: Path):
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splip_engine", "serve", "--engine", str(tiny_engine_dir), "--index", str(index_dir),
             "--port", "0", "--max-body-mb", str(MAX_BODY_MB), "--max-k", str(K_MAX), "--device", "cpu"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.log())):
            assert self.proc.poll() is None and time.monotonic() < deadline, f"the server did not start:\n{self.log()}"
            time.sleep(0.05)
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(tiny_engine_dir, tiny_gallery_index_dir, tmp_path_factory):
    running = Server(tiny_engine_dir, tiny_gallery_index_dir, tmp_path_factory.mktemp("serve") / "server.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def expected(tiny_ort_encoder, tiny_gallery_index_dir) -> dict[tuple[int, str], tuple[list[str], np.ndarray]]:
    """The Python API's top-K_MAX (ids, scores) for each image and modality."""
    index = GalleryIndex.load(tiny_gallery_index_dir)
    out = {}
    for modality in ("sketch", "photo"):
        scores, ids = reference_search(tiny_ort_encoder, index, IMAGES, K_MAX, modality)
        out.update({(i, modality): (list(ids[i]), scores[i]) for i in range(len(IMAGES))})
    return out


def _check_answer(body: dict, expected, image: int, modality: str, k: int) -> None:
    ids, scores = expected[(image, modality)]
    assert [hit["id"] for hit in body["results"]] == ids[:k], f"wrong answer for image {image} ({modality}, k={k})"
    np.testing.assert_allclose([hit["score"] for hit in body["results"]], scores[:k], atol=1e-5)


def _assert_healthy(server: Server, expected) -> None:
    """Still answers correctly (multipart and raw), has answered no 5xx but 503, logged no traceback."""
    for image, modality, k in [(0, "sketch", 5), (len(IMAGES) - 1, "photo", K_MAX)]:
        response = httpx.post(f"{server.url}/search", files={"image": ("q.png", IMAGES[image], "image/png")},
                              data={"k": str(k), "modality": modality}, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        _check_answer(response.json(), expected, image, modality, k)
    raw = httpx.post(f"{server.url}/search", params={"k": 3}, content=IMAGES[1], headers={"Content-Type": "image/png"},
                     timeout=TIMEOUT)
    assert raw.status_code == 200, raw.text
    _check_answer(raw.json(), expected, 1, "sketch", 3)
    metrics = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    server_errors = re.findall(r'^splip_http_requests_total\{path="[^"]*",code="(5\d\d)"\} (\d+)', metrics, re.MULTILINE)
    assert [code for code, _ in server_errors if code != "503"] == [], server_errors
    assert "Traceback" not in server.log() and "Exception in ASGI application" not in server.log(), server.log()


# ------------------------------------------------------------------ load
async def _load(url: str, n_requests: int, n_clients: int, expected) -> dict:
    """`n_clients` concurrent clients sending `n_requests` in all (a mix of multipart and raw
    bodies, sketch and photo, k in 1..K_MAX); every answer is checked; a 503 is retried."""
    latencies, statuses, next_request = [], {}, iter(range(n_requests))
    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT) as client:
        async def one_client() -> None:
            for i in next_request:
                image, modality, k = i % len(IMAGES), "photo" if i % 5 == 4 else "sketch", 1 + i % K_MAX
                while True:
                    start = time.perf_counter()
                    if i % 2:
                        response = await client.post("/search", files={"image": ("q.png", IMAGES[image], "image/png")},
                                                     data={"k": str(k), "modality": modality})
                    else:
                        response = await client.post("/search", params={"k": k, "modality": modality},
                                                     content=IMAGES[image], headers={"Content-Type": "image/png"})
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code != 503:  # back-pressure: retry shortly
                        break
                    await asyncio.sleep(0.05)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, f"request {i}: {response.status_code} {response.text}"
                _check_answer(response.json(), expected, image, modality, k)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(n_clients))), LOAD_TIME_LIMIT_S)
        wall = time.perf_counter() - start
    return {"latencies": np.asarray(latencies), "statuses": statuses, "wall": wall}


@pytest.mark.slow
def test_two_thousand_requests_from_32_clients_all_answered_right_in_bounded_memory(server, expected):
    asyncio.run(_load(server.url, 100, N_CLIENTS, expected))  # warm-up: arenas, caches, thread pools
    rss_warm = server.rss_mb()
    run = asyncio.run(_load(server.url, N_REQUESTS, N_CLIENTS, expected))
    rss_end = server.rss_mb()
    uploads_mb = sum(len(IMAGES[i % len(IMAGES)]) for i in range(N_REQUESTS)) / 2**20
    latencies = run["latencies"] * 1000
    print(f"\nserve load: {N_REQUESTS} requests from {N_CLIENTS} clients in {run['wall']:.1f} s = "
          f"{N_REQUESTS / run['wall']:.0f} req/s; latency p50 {np.percentile(latencies, 50):.1f} ms, "
          f"p99 {np.percentile(latencies, 99):.1f} ms, max {latencies.max():.1f} ms; statuses {run['statuses']}; "
          f"server RSS {rss_warm:.0f} -> {rss_end:.0f} MB ({uploads_mb:.0f} MB uploaded)")
    assert len(latencies) == N_REQUESTS
    assert set(run["statuses"]) <= {200, 503}
    assert rss_end - rss_warm < uploads_mb / 2  # bounded: far less than keeping the uploads
    _assert_healthy(server, expected)


# ------------------------------------------------------------------ abuse
def _raw_request_head(server: Server, length: int, path: str = "/search?k=4") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without answering"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def test_a_slow_upload_is_answered_right_and_does_not_hold_up_others(server, expected):
    image = IMAGES[2]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
        slow.sendall(_raw_request_head(server, len(image)))
        pieces = np.array_split(np.frombuffer(image, np.uint8), 8)
        for n, piece in enumerate(pieces):
            slow.sendall(piece.tobytes())
            if n == 3:  # half-way through the slow upload, another client is answered in full: the slow one
                # (half its body still unsent) holds up no one; TIMEOUT is only a hang guard
                quick = httpx.post(f"{server.url}/search", params={"k": 2}, content=IMAGES[3],
                                   headers={"Content-Type": "image/png"}, timeout=TIMEOUT)
                assert quick.status_code == 200
                _check_answer(quick.json(), expected, 3, "sketch", 2)
            time.sleep(0.15)
        status, body = _read_response(slow)
    assert status == 200, body
    _check_answer(json.loads(body), expected, 2, "sketch", 4)
    _assert_healthy(server, expected)


def test_clients_that_disconnect_mid_upload_leave_the_server_answering(server, expected):
    before = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    for n in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(_raw_request_head(server, 50_000) + IMAGES[n % len(IMAGES)][:1000])
        if n % 2:  # an abortive close (RST) for half of them, a clean FIN for the others
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_until(lambda: _count(httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text) >= _count(before) + 20, 10)
    _assert_healthy(server, expected)


def _count(metrics: str) -> int:
    """All /search responses counted by the metrics middleware."""
    return sum(int(n) for n in re.findall(r'^splip_http_requests_total\{path="/search",code="\d+"\} (\d+)', metrics,
                                          re.MULTILINE))


def test_oversized_bodies_are_413_declared_streamed_or_multipart(server, expected):
    limit = MAX_BODY_MB * 1024 * 1024
    big = bytes(limit + 1)
    limit_text = f"over the limit of {limit:,} bytes (max_body_bytes)"
    for response in [
        httpx.post(f"{server.url}/search", content=big, headers={"Content-Type": "image/png"}, timeout=TIMEOUT),
        httpx.post(f"{server.url}/search", content=iter([big[:limit // 2], big[limit // 2:]]),  # chunked, no length
                   headers={"Content-Type": "image/png"}, timeout=TIMEOUT),
        httpx.post(f"{server.url}/search", files={"image": ("big.png", big, "image/png")}, timeout=TIMEOUT),
    ]:
        assert response.status_code == 413 and limit_text in response.json()["detail"], response.text
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:  # 10 GB declared, none sent
        sock.sendall(_raw_request_head(server, 10 * 2**30))
        status, body = _read_response(sock)
    assert status == 413 and b"10,737,418,240 bytes" in body
    _assert_healthy(server, expected)


def test_malformed_multipart_is_400(server, expected):
    boundary = "xyzzy"
    good = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + IMAGES[0] + f"\r\n--{boundary}--\r\n".encode()
    cases = {
        "no boundary": (b"garbage", "multipart/form-data"),
        "cut short": (good[: len(good) // 2], f"multipart/form-data; boundary={boundary}"),
        "other boundary": (good, "multipart/form-data; boundary=other"),
        "garbage": (bytes(range(256)) * 4, f"multipart/form-data; boundary={boundary}"),
    }
    for name, (body, content_type) in cases.items():
        response = httpx.post(f"{server.url}/search", content=body, headers={"Content-Type": content_type},
                              timeout=TIMEOUT)
        assert response.status_code in (400, 422), f"{name}: {response.status_code} {response.text}"
        detail = response.json()["detail"]
        assert detail.startswith("malformed multipart body") or "missing form field 'image'" in detail, (name, detail)
        if name == "no boundary":
            assert detail == "malformed multipart body: Missing boundary in multipart."
    _assert_healthy(server, expected)


@pytest.mark.parametrize("k, message", [
    ("0", r"k=0 is out of range"), ("-3", r"k=-3 is out of range"), (str(10**12), r"k=1000000000000 is out of range"),
    ("ten", r"k='ten' is not an integer"), ("1.5", r"k='1\.5' is not an integer"), ("", r"k='' is not an integer"),
])
def test_bad_k_is_422_in_form_and_query(server, expected, k, message):
    message += rf".* 1\.\.{K_MAX}"
    form = httpx.post(f"{server.url}/search", files={"image": ("q.png", IMAGES[0], "image/png")}, data={"k": k},
                      timeout=TIMEOUT)
    query = httpx.post(f"{server.url}/search", params={"k": k}, content=IMAGES[0],
                       headers={"Content-Type": "image/png"}, timeout=TIMEOUT)
    for response in (form, query):
        assert response.status_code == 422 and re.search(message, response.json()["detail"]), response.text
    _assert_healthy(server, expected)


def test_k_up_to_the_limit_is_answered_whole(server, expected, tiny_gallery_index_dir):
    response = httpx.post(f"{server.url}/search", params={"k": K_MAX}, content=IMAGES[5],
                          headers={"Content-Type": "image/png"}, timeout=TIMEOUT)
    assert response.status_code == 200 and len(response.json()["results"]) == min(K_MAX, GalleryIndex.load(tiny_gallery_index_dir).count)
    _check_answer(response.json(), expected, 5, "sketch", K_MAX)


def test_the_real_server_writes_one_json_access_line_per_request(server, expected):
    response = httpx.post(f"{server.url}/search", params={"k": 2}, content=IMAGES[4],
                          headers={"Content-Type": "image/png", "X-Request-ID": "load-test-42"}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.headers["x-request-id"] == "load-test-42"

    def line() -> dict | None:
        lines = [json.loads(text) for text in server.log().splitlines() if text.startswith("{")]
        return next((entry for entry in lines if entry["request_id"] == "load-test-42"), None)

    wait_until(lambda: line() is not None, 10)
    entry = line()
    assert (entry["method"], entry["path"], entry["status"], entry["images"], entry["index_version"]) == \
        ("POST", "/search", 200, 1, 1)
    assert entry["batch_size"] >= 1 and entry["latency_ms"] > 0 and entry["bytes_in"] == len(IMAGES[4])
