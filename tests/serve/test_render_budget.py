"""Vector uploads in the service (issue 20): renders run off the event loop and the batcher in a
bounded render pool; a client that disconnects stops its render; shutdown ends renders in flight
within its window; a full render queue is a 503, and photo queries never queue behind renders."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from data.hostile_svgs import marker_bomb_svg
from splip_engine.data import sandbox
from splip_engine.serve import ServeSettings, create_app

from .helpers import make_png, running_server, serving_thread, wait_until

BOMB = marker_bomb_svg(circles=500)  # minutes of rendering without a budget


@pytest.fixture
def long_budget():
    """A budget longer than any test: what ends a render here is the service, not the budget."""
    previous = sandbox.get_budget()
    sandbox.set_budget(sandbox.DecodeBudget(timeout_s=120))
    yield
    sandbox.set_budget(previous)


def _post(url: str, data: bytes, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/search", content=data, headers={"content-type": "image/svg+xml"}, timeout=timeout)


def _rendering() -> int:
    """Render children of this process working on a request now."""
    return sum(child.alive() for child in list(sandbox._pool.busy))


def test_a_client_that_disconnects_stops_its_render(tiny_ort_encoder, gallery_index, long_budget):
    with running_server(create_app(tiny_ort_encoder, gallery_index, ServeSettings())) as url:
        with pytest.raises(httpx.ReadTimeout):
            _post(url, BOMB, timeout=1.0)  # the client gives up and closes its connection
        wait_until(lambda: _rendering() == 0, timeout=3.0)  # the poll notices within 0.1 s; the kill is at once
        assert httpx.post(f"{url}/search", files={"image": ("q.png", make_png(1))}, timeout=30).status_code == 200


def test_shutdown_ends_a_render_in_flight_within_its_window(tiny_ort_encoder, gallery_index, long_budget):
    window = 2.0
    app = create_app(tiny_ort_encoder, gallery_index, ServeSettings())
    service = app.state.service
    with serving_thread(app, timeout=window) as (url, server):  # uvicorn's graceful window
        client = threading.Thread(target=lambda: _status(url), daemon=True)
        client.start()
        wait_until(lambda: _rendering() == 1, timeout=20)
        start = time.monotonic()
        server.should_exit = True  # what SIGTERM does
        wait_until(lambda: service.render_pool._shutdown and _rendering() == 0, timeout=window + 3)
        stopped_in = time.monotonic() - start
    assert stopped_in < window + 1.5  # the window, then the render is killed and the pools stop


def test_renders_are_bounded_and_photo_queries_do_not_wait_for_them(tiny_ort_encoder, gallery_index,
                                                                     long_budget):
    app = create_app(tiny_ort_encoder, gallery_index, ServeSettings(render_workers=1, render_queue=2))
    with serving_thread(app, timeout=2.0) as (url, server):
        for _ in range(2):
            threading.Thread(target=lambda: _status(url), daemon=True).start()
        wait_until(lambda: _rendering() == 1, timeout=20)
        time.sleep(0.3)  # both in: one rendering, one waiting for the only render worker
        assert _rendering() == 1  # at most render_workers renders at once
        third = _post(url, BOMB)
        assert third.status_code == 503 and "renders are waiting (at most 2)" in third.json()["detail"]
        start = time.monotonic()
        assert httpx.post(f"{url}/search", files={"image": ("q.png", make_png(2))}, timeout=30).status_code == 200
        assert time.monotonic() - start < 5.0  # a photo query is answered while the renders hold their pool
        server.should_exit = True  # the shutdown window (2 s) ends both renders
        wait_until(lambda: app.state.service.render_pool._shutdown and _rendering() == 0, timeout=8)


def _status(url: str) -> int:
    try:
        return _post(url, BOMB, timeout=60).status_code
    except httpx.HTTPError:
        return -1
