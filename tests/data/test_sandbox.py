"""The decode budget (data/sandbox.py): a render bomb is stopped at its CPU-time budget, a memory
bomb at its memory budget, each with an error naming the budget and the flag; a cancelled render
stops at once; the render child survives ordinary bad input and is replaced after a kill; it
imports the renderers only (not torch)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from splip_engine.data import sandbox, svg
from splip_engine.data.images import ImageDecodeError, load_image

from .hostile_svgs import data_image_svg, marker_bomb_svg, overflow_svg, pattern_bomb_svg
from .imagefactory import encode, strokes_svg

BOMB = marker_bomb_svg(circles=500, vertices=20000)  # minutes of rendering unbounded


@pytest.fixture
def budget():
    """Set a budget for one test; the default comes back after it."""
    previous = sandbox.get_budget()
    yield lambda **fields: sandbox.set_budget(sandbox.DecodeBudget(**fields))
    sandbox.set_budget(previous)


def _child_pids() -> set[int]:
    return {child.proc.pid for child in sandbox._pool.idle}


def test_a_render_bomb_is_stopped_at_its_time_budget_and_the_next_image_renders(budget):
    budget(timeout_s=0.5)
    load_image(strokes_svg())  # a started child: the budget below is the render's, not the start-up's
    start = time.monotonic()
    with pytest.raises(ImageDecodeError, match=r"<bytes>: rendering took longer than the decode budget of 0.5 s of "
                                               r"CPU time \(or 30 s waiting\) .*--decode-timeout SECONDS"):
        load_image(BOMB)
    assert time.monotonic() - start < 30 + 1.0  # stopped by the budget (+ the kill), not by the render ending (minutes)
    np.testing.assert_array_equal(np.asarray(load_image(strokes_svg())), np.asarray(svg.render_svg(strokes_svg(), "x")))


def test_a_memory_bomb_is_stopped_at_its_memory_budget(budget):
    budget(memory_mib=64)  # the pattern tile is a 30000 x 30000 x 4 byte surface: 3.4 GB
    with pytest.raises(ImageDecodeError, match=r"needs more than the decode budget of 64 MiB of memory .*--decode-memory MIB"):
        load_image(pattern_bomb_svg())
    big_picture = data_image_svg(encode(Image.new("RGB", (6000, 6000)), "PNG"))  # 144 MB as RGBA: fits 512 MiB, not 64
    with pytest.raises(ImageDecodeError, match=r"64 MiB of memory"):
        load_image(big_picture)
    budget(memory_mib=512)
    assert load_image(big_picture).size == (512, 512)


def test_the_child_is_kept_after_bad_input_and_replaced_after_a_kill(budget):
    budget(timeout_s=0.5)
    load_image(strokes_svg())
    before = _child_pids()
    with pytest.raises(ImageDecodeError, match="numeric overflow guard"):
        load_image(overflow_svg("width"))
    assert _child_pids() == before  # an answer, not a crash: the same child renders on
    with pytest.raises(ImageDecodeError, match="decode budget"):
        load_image(BOMB)
    assert not _child_pids() & before  # the killed one is gone
    assert load_image(strokes_svg()).size == (512, 341)


def test_a_cancelled_render_stops_at_once(budget):
    budget(timeout_s=60)
    load_image(strokes_svg())
    cancel, outcome = threading.Event(), {}

    def render() -> None:
        with sandbox.cancelled_by(cancel):
            try:
                load_image(BOMB)
            except sandbox.RenderCancelled as e:
                outcome["cancelled"] = time.monotonic()
                outcome["error"] = e

    worker = threading.Thread(target=render)
    worker.start()
    time.sleep(0.5)
    cancel.set()
    cancelled_at = time.monotonic()
    worker.join(timeout=5)
    assert "cancelled" in outcome and outcome["cancelled"] - cancelled_at < 1.0


def test_stop_all_ends_renders_in_flight(budget):
    budget(timeout_s=60)
    load_image(strokes_svg())
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_failure(lambda: load_image(BOMB))))
    worker.start()
    time.sleep(0.5)
    start = time.monotonic()
    sandbox.stop_all()
    worker.join(timeout=5)
    assert time.monotonic() - start < 1.0 and isinstance(errors[0], sandbox.RenderCancelled)


def _failure(call) -> BaseException | None:
    try:
        call()
    except BaseException as e:  # noqa: BLE001 (the test inspects it)
        return e
    return None


def test_the_render_child_does_not_import_torch():
    load_image(strokes_svg())
    [pid] = list(_child_pids())[:1]
    with open(f"/proc/{pid}/maps") as maps:
        libraries = maps.read()
    assert "libtorch" not in libraries and "cairo" in libraries


@pytest.mark.parametrize("field, value", [("timeout_s", 0), ("timeout_s", float("inf")), ("memory_mib", 8),
                                          ("memory_mib", 1.5), ("timeout_s", True)])
def test_a_bad_budget_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"DecodeBudget.{field}="):
        sandbox.DecodeBudget(**{field: value})
