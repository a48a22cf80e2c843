"""Authentication and operations on a real server on 127.0.0.1: 401 (with WWW-Authenticate)
without or with a wrong bearer token on every path but liveness, 200 with it (tritonclient too);
the token in no log line and no metric; one JSON access line per request with its request id
(echoed in X-Request-ID); the non-loopback refusal; graceful shutdown finishes in-flight requests."""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.errors import SpLIPError
from splip_engine.serve import ServeSettings, create_app
from splip_engine.serve.auth import check_exposure, load_token
from splip_engine.serve.observe import ACCESS_LOGGER

from .helpers import GatedEncoder, reference_search, running_server, serving_thread, wait_until

TOKEN = "s3cret-token-0123456789abcdef"
TIMEOUT = httpx.Timeout(20.0)
PROTECTED = [("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/search"), ("POST", "/admin/reload"),
             ("GET", "/v2"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/splip"),
             ("GET", "/v2/models/splip/ready"), ("POST", "/v2/models/splip/infer"), ("GET", "/nowhere")]


@pytest.fixture(scope="module")
def url(tiny_encoder, gallery_index):
    with running_server(create_app(tiny_encoder, gallery_index, ServeSettings(max_wait_ms=1), token=TOKEN)) as base:
        # readiness follows the warm-up (engine batches, render children started): wait for it, as a balancer would
        wait_until(lambda: httpx.get(f"{base}/v2/health/ready", headers=_bearer(TOKEN)).status_code == 200, 60)
        yield base


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_path_but_liveness_needs_the_token(url, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    for method, path in PROTECTED:
        for headers, challenge in [({}, 'Bearer realm="splip"'),
                                   (_bearer("wrong-token-0123456789"), 'Bearer realm="splip", error="invalid_token"'),
                                   ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="splip", error="invalid_token"'),
                                   (_bearer(TOKEN[:-1]), 'Bearer realm="splip", error="invalid_token"')]:
            response = httpx.request(method, f"{url}{path}", headers=headers, timeout=TIMEOUT)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == challenge
            key = "error" if path.startswith("/v2") else "detail"  # the protocol's error body under /v2
            assert set(response.json()) == {key}
    for path in ("/healthz", "/metrics", "/v2", "/v2/health/ready", "/v2/models/splip"):
        assert httpx.get(f"{url}{path}", headers=_bearer(TOKEN), timeout=TIMEOUT).status_code == 200, path
    metrics = httpx.get(f"{url}/metrics", headers=_bearer(TOKEN), timeout=TIMEOUT).text
    assert 'splip_http_requests_total{path="/search",code="401"} 4' in metrics
    assert TOKEN not in metrics and TOKEN[:-1] not in metrics
    assert all(TOKEN[:-1] not in record.getMessage() for record in caplog.records)


def test_search_and_tritonclient_with_the_token(url, tiny_encoder, gallery_index, sketches):
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (the dev extra) is not installed")
    from tritonclient.utils import InferenceServerException

    ids = reference_search(tiny_encoder, gallery_index, sketches[:1], 4)[1][0].tolist()
    response = httpx.post(f"{url}/search", params={"k": 4}, content=sketches[0],
                          headers={"Content-Type": "image/png", **_bearer(TOKEN)}, timeout=TIMEOUT)
    assert response.status_code == 200 and [hit["id"] for hit in response.json()["results"]] == ids
    with httpclient.InferenceServerClient(url.removeprefix("http://")) as client:
        assert client.is_server_live()  # liveness needs no token
        with pytest.raises(InferenceServerException, match="authentication required"):
            client.get_model_metadata("splip")
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([sketches[0]], dtype=object))
        result = client.infer("splip", [tensor], parameters={"k": 4}, headers=_bearer(TOKEN))
        assert [i.decode() for i in result.as_numpy("ids")[0]] == ids


def test_access_log_is_one_json_line_per_request_with_its_id_and_never_the_image(url, sketches, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    caplog.clear()
    sent = httpx.post(f"{url}/search", content=sketches[1], headers={
        "Content-Type": "image/png", "X-Request-ID": "client-abc.123", **_bearer(TOKEN)}, timeout=TIMEOUT)
    bad_id = httpx.get(f"{url}/healthz", headers={"X-Request-ID": 'a b"}{', **_bearer(TOKEN)}, timeout=TIMEOUT)
    refused = httpx.get(f"{url}/metrics", timeout=TIMEOUT)
    assert sent.headers["x-request-id"] == "client-abc.123"
    assert len(bad_id.headers["x-request-id"]) == 32 and bad_id.headers["x-request-id"].isalnum()  # a fresh id
    # a line is written once its response has gone out, so it can land after the client has read it, and the
    # previous test's last line can land after caplog.clear(): wait for ours and keep only ours, by id
    ours = {response.headers["x-request-id"] for response in (sent, bad_id, refused)}

    def our_lines() -> list[dict]:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
        return [line for line in lines if line["request_id"] in ours]

    wait_until(lambda: len(our_lines()) >= len(ours))
    lines = our_lines()
    assert [(line["path"], line["status"]) for line in lines] == [("/search", 200), ("/healthz", 200), ("/metrics", 401)]
    search = lines[0]
    assert search["request_id"] == "client-abc.123" and search["method"] == "POST" and search["latency_ms"] > 0
    assert (search["images"], search["batch_size"], search["index_version"], search["bytes_in"]) == \
        (1, 1, 1, len(sketches[1]))
    assert lines[1]["request_id"] == bad_id.headers["x-request-id"] and lines[2]["batch_size"] is None
    assert refused.headers["x-request-id"] == lines[2]["request_id"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in text and "PNG" not in text and "Authorization" not in text


def test_a_non_loopback_address_without_a_token_is_refused_unless_no_auth(tmp_path, monkeypatch):
    monkeypatch.delenv("SPLIP_AUTH_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--engine", str(tmp_path), "--index", str(tmp_path), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in result.output
    assert "--auth-token-file FILE (or set $SPLIP_AUTH_TOKEN), or --no-auth" in result.output
    check_exposure("0.0.0.0", None, no_auth=True)  # explicit: allowed
    check_exposure("0.0.0.0", TOKEN, no_auth=False)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(host, None, no_auth=False)
    with pytest.raises(SpLIPError, match="contradict each other"):
        check_exposure("127.0.0.1", TOKEN, no_auth=True)


def test_the_token_comes_from_its_file_or_the_environment_and_must_be_long(tmp_path):
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    assert load_token(tmp_path / "token", {}) == TOKEN
    assert load_token(None, {"SPLIP_AUTH_TOKEN": TOKEN}) == TOKEN and load_token(None, {}) is None
    (tmp_path / "short").write_text("abc")
    with pytest.raises(SpLIPError, match="holds a token of 3 characters .* at least 16 random characters"):
        load_token(tmp_path / "short", {})
    with pytest.raises(SpLIPError, match="cannot read the auth token file"):
        load_token(tmp_path / "missing", {})


def test_graceful_shutdown_finishes_in_flight_requests_and_takes_no_new_ones(tiny_encoder, gallery_index, sketches):
    encoder = GatedEncoder(tiny_encoder)  # holds the batch worker: the requests stay in flight
    encoder.gate.set()
    app = create_app(encoder, gallery_index, ServeSettings(max_batch=1, max_wait_ms=0))  # one request per batch
    with serving_thread(app) as (url, server), ThreadPoolExecutor(4) as pool:
        wait_until(app.state.service.is_ready)
        encoder.gate.clear()
        in_flight = [pool.submit(httpx.post, f"{url}/search", params={"k": 3}, content=png,
                                 headers={"Content-Type": "image/png"}, timeout=TIMEOUT) for png in sketches[:4]]
        # all four inside the server: one held by the gate in the batch worker, three queued behind it
        wait_until(lambda: app.state.service.batcher.depth() == 3, timeout=30)
        server.should_exit = True  # what uvicorn does on SIGTERM
        wait_until(lambda: not any(s.is_serving() for s in server.servers))  # stopped listening at once
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=TIMEOUT)
        threading.Timer(0.3, encoder.gate.set).start()
        for future, png in zip(in_flight, sketches):
            response = future.result(timeout=20)
            assert response.status_code == 200, response.text
            assert [hit["id"] for hit in response.json()["results"]] == \
                reference_search(tiny_encoder, gallery_index, [png], 3)[1][0].tolist()
