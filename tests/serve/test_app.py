"""The HTTP service, started for real on 127.0.0.1: correct answers under concurrency, batching,
503 under overload and recovery, 4xx for bad requests, /healthz and /metrics."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from splip_engine.serve import ServeSettings, create_app

from .helpers import (
    GatedEncoder,
    make_png,
    reference_search,
    running_server,
    wait_until,
)

MAX_BODY = 64 * 1024  # small, so the oversize case needs only a small upload
TIMEOUT = httpx.Timeout(20.0)


@pytest.fixture(scope="module")
def server(tiny_encoder, gallery_index):
    """One server for the request-validation tests: a long batching window (batches form)."""
    settings = ServeSettings(max_batch=32, max_wait_ms=150, queue_size=64, max_body_bytes=MAX_BODY, max_k=1000)
    with running_server(create_app(tiny_encoder, gallery_index, settings)) as url:
        yield url


def _post(url: str, png: bytes | None, timeout=TIMEOUT, **fields) -> httpx.Response:
    files = {"image": ("sketch.png", png, "image/png")} if png is not None else None
    return httpx.post(f"{url}/search", files=files, data={k: str(v) for k, v in fields.items()}, timeout=timeout)


def _assert_matches_python_api(response: httpx.Response, encoder, index, png: bytes, k: int, modality="sketch"):
    assert response.status_code == 200, response.text
    body = response.json()
    scores, ids = reference_search(encoder, index, [png], k, modality)
    assert body["k"] == k and body["latency_ms"] > 0
    assert [hit["rank"] for hit in body["results"]] == list(range(1, k + 1))
    assert [hit["id"] for hit in body["results"]] == list(ids[0])
    # batched vs one-by-one embedding: float32 summation order only
    np.testing.assert_allclose([hit["score"] for hit in body["results"]], scores[0], atol=1e-5)


def _metric(text: str, sample: str) -> float:
    """The value of one sample line, e.g. 'splip_batch_size_count'."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in /metrics"
    return float(match.group(1))


def test_concurrent_requests_are_batched_and_match_the_python_api(server, tiny_encoder, gallery_index, sketches):
    before = httpx.get(f"{server}/metrics").text
    jobs = [(png, 1 + i % 10, "photo" if i % 8 == 7 else "sketch") for i, png in enumerate(sketches)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda job: _post(server, job[0], k=job[1], modality=job[2]), jobs))
    for response, (png, k, modality) in zip(responses, jobs):
        _assert_matches_python_api(response, tiny_encoder, gallery_index, png, k, modality)
    after = httpx.get(f"{server}/metrics").text
    batches = _metric(after, "splip_batch_size_count") - _metric(before, "splip_batch_size_count")
    requests = _metric(after, "splip_batch_size_sum") - _metric(before, "splip_batch_size_sum")
    assert requests == len(jobs) and batches < len(jobs)  # some batch held more than one request


def test_raw_image_body_with_k_in_the_query(server, tiny_encoder, gallery_index, sketches):
    response = httpx.post(f"{server}/search", params={"k": 3}, content=sketches[0],
                          headers={"Content-Type": "image/png"}, timeout=TIMEOUT)
    _assert_matches_python_api(response, tiny_encoder, gallery_index, sketches[0], 3)


def test_k_above_the_gallery_size_returns_the_whole_gallery(server, gallery_index):
    response = _post(server, make_png(99), k=len(gallery_index) + 50)
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(gallery_index)


@pytest.mark.parametrize("png, message", [
    (b"this is not an image", "bad image: <bytes>: a text file, not an image"),
    (b"", r"bad image: <bytes> is empty \(0 bytes\), not an image"),
    (make_png(0)[:60], "bad image: <bytes>: truncated image data"),
])
def test_bad_image_is_400_with_the_decode_error(server, png, message):
    response = _post(server, png)
    assert response.status_code == 400
    assert re.search(message, response.json()["detail"])


def test_missing_or_wrong_fields_are_4xx(server):
    missing = httpx.post(f"{server}/search", data={"k": "3"}, files={"other": ("x.png", make_png(1))}, timeout=TIMEOUT)
    assert missing.status_code == 422 and "missing form field 'image'" in missing.json()["detail"]
    text = httpx.post(f"{server}/search", data={"image": "not a file"}, files={"other": ("x.png", b"1")}, timeout=TIMEOUT)
    assert text.status_code == 422 and "must be a file upload" in text.json()["detail"]
    modality = _post(server, make_png(1), modality="painting")
    assert modality.status_code == 422 and "modality='painting' is not supported" in modality.json()["detail"]
    two_files = httpx.post(f"{server}/search", files=[("image", ("a.png", make_png(1))), ("image", ("b.png", make_png(2)))],
                           timeout=TIMEOUT)
    assert two_files.status_code == 400 and "malformed multipart body: Too many files" in two_files.json()["detail"]
    text_body = httpx.post(f"{server}/search", content=b"x", headers={"Content-Type": "text/plain"}, timeout=TIMEOUT)
    assert text_body.status_code == 415 and "'text/plain' is not supported" in text_body.json()["detail"]


def test_healthz_describes_engine_and_index(server, tiny_encoder, gallery_index):
    body = httpx.get(f"{server}/healthz").json()
    assert body["status"] == "ok"
    assert body["engine"]["embedding_dim"] == tiny_encoder.embedding_dim and body["engine"]["backend"] == "torch"
    assert body["index"] == {**body["index"], "size": len(gallery_index), "dim": tiny_encoder.embedding_dim}


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? (\S+)$')


def test_metrics_is_prometheus_text_with_the_service_counters(server, gallery_index):
    assert _post(server, make_png(2)).status_code == 200
    assert _post(server, b"junk").status_code == 400
    response = httpx.get(f"{server}/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    types, samples = {}, {}
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif not line.startswith("# HELP "):
            match = _SAMPLE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            float(match.group(4))  # the value parses (NaN / +Inf included)
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    assert types == {"splip_http_requests_total": "counter", "splip_search_latency_seconds": "histogram",
                     "splip_search_latency_recent_seconds": "summary", "splip_infer_latency_seconds": "histogram",
                     "splip_infer_latency_recent_seconds": "summary", "splip_grpc_infer_latency_seconds": "histogram",
                     "splip_grpc_infer_latency_recent_seconds": "summary", "splip_batch_size": "histogram",
                     "splip_queue_depth": "gauge", "splip_overloaded_total": "counter", "splip_index_version": "gauge",
                     "splip_index_size": "gauge", "splip_index_reloads_total": "counter"}
    assert samples["splip_index_version"] == 1 and samples["splip_index_size"] == len(gallery_index)
    assert samples['splip_http_requests_total{path="/search",code="200"}'] >= 1
    assert samples['splip_http_requests_total{path="/search",code="400"}'] >= 1
    assert samples['splip_search_latency_recent_seconds{quantile="0.99"}'] >= \
        samples['splip_search_latency_recent_seconds{quantile="0.5"}'] > 0
    for histogram in ("splip_search_latency_seconds", "splip_batch_size"):
        buckets = [v for key, v in samples.items() if key.startswith(histogram + "_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == samples[histogram + "_count"]  # cumulative, +Inf = count
    assert samples["splip_queue_depth"] == 0


def test_overload_answers_503_then_serves_correctly(tiny_encoder, gallery_index, sketches):
    encoder = GatedEncoder(tiny_encoder)  # holds the one batch worker until the queue has filled
    settings = ServeSettings(max_batch=1, max_wait_ms=0, queue_size=1, decode_workers=2)
    n_requests = 16
    with running_server(create_app(encoder, gallery_index, settings)) as url, ThreadPoolExecutor(n_requests) as pool:
        futures = [pool.submit(_post, url, sketches[i], k=5) for i in range(n_requests)]
        # at most 2 are accepted (1 running, 1 queued) while the gate is shut; the rest come back 503
        wait_until(lambda: sum(f.done() for f in futures) >= n_requests - 2)
        encoder.gate.set()
        responses = [f.result() for f in futures]
        refused = [r for r in responses if r.status_code == 503]
        assert len(refused) >= n_requests - 2
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert "search queue is full (1 requests waiting, the queue_size limit); retry shortly" in response.json()["detail"]
        for i, response in enumerate(responses):
            if response.status_code != 503:
                _assert_matches_python_api(response, tiny_encoder, gallery_index, sketches[i], 5)
        _assert_matches_python_api(_post(url, sketches[0], k=5), tiny_encoder, gallery_index, sketches[0], 5)
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "splip_overloaded_total") == len(refused)


class _BrokenEncoder(GatedEncoder):
    """An encoder whose embed_pixels fails, as a backend error would."""

    def embed_pixels(self, pixels, modality):
        raise RuntimeError("backend exploded")


def test_encoder_failure_is_500_json_and_counted(tiny_encoder, gallery_index, sketches):
    with running_server(create_app(_BrokenEncoder(tiny_encoder), gallery_index)) as url:
        response = _post(url, sketches[0])
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error (RuntimeError); see the server log"}
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, 'splip_http_requests_total{path="/search",code="500"}') == 1


def test_stopped_batch_worker_makes_healthz_and_search_503(tiny_encoder, gallery_index, sketches):
    app = create_app(tiny_encoder, gallery_index)
    with running_server(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        app.state.service.batcher.close()
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "batch worker stopped"
        search = _post(url, sketches[0])
        assert search.status_code == 503 and "shutting down" in search.json()["detail"]


@pytest.mark.parametrize("content_type", ["image/svg+xml", "application/x-ndjson", "application/json"])
def test_svg_and_quickdraw_bodies_go_to_the_same_decoder(server, tiny_encoder, gallery_index, content_type):
    from data.imagefactory import STROKES, quickdraw_line, strokes_svg

    body = strokes_svg() if content_type == "image/svg+xml" else quickdraw_line(STROKES)
    response = httpx.post(f"{server}/search", params={"k": 5}, content=body, headers={"Content-Type": content_type},
                          timeout=TIMEOUT)
    _assert_matches_python_api(response, tiny_encoder, gallery_index, body, 5)
