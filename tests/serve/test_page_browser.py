"""The draw-to-search page in a real headless Chromium (Debian's chromium + chromium-driver, driven
by selenium with their paths given, so nothing downloads a browser) against the real `splip-engine
serve` process on 127.0.0.1: strokes drawn with pointer events on #sketch bring results without a
button, equal to the Python API's for the strokes the page sent; thumbnails load (200, decoded);
undo and Ctrl+Z re-query with the remaining strokes; clear empties canvas and results; a server
with a token works through the page, the token in no URL and no log line; a screenshot is saved."""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from .helpers import free_port, reference_search, serve_process

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,  # two `serve` processes and a browser: about 40 s on 2 quiet cores
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                 reason="needs Debian's chromium and chromium-driver (bash .ci/setup installs them)")]
TOKEN = "browser-token-0123456789abcdef"
STAR = [(0.50, 0.10), (0.62, 0.40), (0.92, 0.42), (0.68, 0.62), (0.78, 0.92), (0.50, 0.74), (0.22, 0.92),
        (0.32, 0.62), (0.08, 0.42), (0.38, 0.40), (0.50, 0.10)]
"""A star outline, as fractions of the canvas side."""
STROKES = [STAR, [(0.50, 0.30), (0.50, 0.55)], [(0.40, 0.45), (0.60, 0.45)]]


@contextlib.contextmanager
def serving(engine_dir: Path, index_dir: Path, log: Path, token_file: Path | None = None) -> Iterator[str]:
    """`splip-engine serve` in a subprocess on a free 127.0.0.1 port; yields its URL once ready."""
    port = free_port()
    args = ["--engine", str(engine_dir), "--index", str(index_dir), "--port", str(port), "--backend", "onnxruntime",
            "--device", "cpu", "--max-wait-ms", "1"]
    headers = {}
    if token_file is not None:
        args += ["--auth-token-file", str(token_file)]
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    url = f"http://127.0.0.1:{port}"
    with serve_process(args, log, lambda: httpx.get(f"{url}/healthz", headers=headers, timeout=2).json().get("ready"),
                       timeout=90):
        yield url


@pytest.fixture(scope="module")
def gallery(tiny_ort_encoder, tiny_engine_dir, tmp_path_factory):
    """An index of 24 photos (6 shape classes, 96 px) embedded with the tiny fp32 engine, saved."""
    from splip_engine.data.mini import make_mini_dataset
    from splip_engine.index import GalleryIndex, open_store
    from splip_engine.runtime.embed_job import run_embed

    root = tmp_path_factory.mktemp("browser-gallery")
    data = make_mini_dataset(root / "data", classes=6, per_class=4, size=96)
    run_embed(tiny_ort_encoder, data.photo_root, root / "store", modality="photo", workers=0, progress=False)
    index = GalleryIndex.build_from_store(open_store(root / "store"), kind="flat")
    index.save(root / "index")
    return index, root / "index"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    # the driver's path given: selenium-manager (which could download a browser) never runs
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def draw(driver, stroke: list[tuple[float, float]]) -> None:
    """One stroke with real pointer events (press, moves, release) on #sketch; points are fractions of its side."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "sketch")
    side = canvas.size["width"]
    points = [(round((x - 0.5) * side), round((y - 0.5) * side)) for x, y in stroke]  # offsets from the centre
    actions = ActionChains(driver, duration=20).move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        for step in range(1, 4):  # intermediate moves, like a hand
            actions.move_to_element_with_offset(canvas, x0 + (x1 - x0) * step // 3, y0 + (y1 - y0) * step // 3)
    actions.release().perform()


def answer_for(driver, strokes: int, timeout: float = 30) -> dict:
    """Wait until the grid shows the answer to a drawing of `strokes` strokes with every image settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script(
            "const s = window.splip, t = s.timings[s.timings.length - 1];"
            "const imgs = [...document.querySelectorAll('#results img')];"
            "return {busy: s.busy, timing: t || null, body: s.lastBody, status: s.thumbnailStatus,"
            " ids: imgs.map(i => i.dataset.id), scores: imgs.map(i => Number(i.dataset.score)),"
            " decoded: imgs.map(i => i.complete && i.naturalWidth > 0), settled: imgs.every(i => i.dataset.loaded)}")
        timing = state["timing"]
        if not state["busy"] and timing and timing["strokes"] == strokes and state["settled"] and \
                timing["imagesMs"] is not None:
            return state
        time.sleep(0.05)
    raise AssertionError(f"no answer for {strokes} strokes in {timeout} s: {state}")


def check_answer(state: dict, strokes: int, encoder, index, tmp_path: Path) -> None:
    """The shown grid is the Python API's answer for the drawing the page sent, and every thumbnail loaded."""
    body = json.loads(state["body"])
    assert len(body["drawing"]) == strokes
    drawing = tmp_path / f"sent-{strokes}.ndjson"  # the same drawing, as a file
    drawing.write_text(json.dumps({"key_id": "1", **body}) + "\n")
    scores, ids = reference_search(encoder, index, [str(drawing)], len(state["ids"]))
    assert state["ids"] == list(ids[0])
    np.testing.assert_allclose(state["scores"], scores[0], atol=1e-5)
    assert all(state["decoded"]), state
    assert all(state["status"][id_] == 200 for id_ in state["ids"])


def test_drawing_brings_results_undo_requeries_clear_empties(browser, gallery, tiny_engine_dir, tiny_ort_encoder,
                                                             tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    index, index_dir = gallery
    with serving(tiny_engine_dir, index_dir, tmp_path / "serve.log") as url:
        browser.get(url + "/")
        assert browser.find_element(By.ID, "results").find_elements(By.TAG_NAME, "img") == []
        for count, stroke in enumerate(STROKES, start=1):
            draw(browser, stroke)  # no button: the answer comes after the stroke
            state = answer_for(browser, count)
            check_answer(state, count, tiny_ort_encoder, index, tmp_path)
        assert len(state["ids"]) == 20  # the page's default top-k
        assert "ms" in browser.find_element(By.ID, "latency").text
        browser.save_screenshot(str(tmp_path / "page.png"))
        screenshot = Image.open(tmp_path / "page.png")
        assert screenshot.size[0] >= 1000 and len(set(screenshot.convert("L").getdata())) > 50

        browser.find_element(By.ID, "undo").click()
        check_answer(answer_for(browser, 2), 2, tiny_ort_encoder, index, tmp_path)
        ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
        check_answer(answer_for(browser, 1), 1, tiny_ort_encoder, index, tmp_path)

        draw(browser, STROKES[1])
        browser.find_element(By.ID, "clear").click()  # also drops the answer still on its way
        time.sleep(1.0)
        assert browser.find_element(By.ID, "results").find_elements(By.XPATH, "*") == []
        assert browser.find_element(By.ID, "latency").text == ""
        blank = browser.execute_script(
            "const c = document.getElementById('sketch'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return d.every(v => v === 255);")
        assert blank


def test_a_token_protected_server_works_through_the_page(browser, gallery, tiny_engine_dir, tiny_ort_encoder,
                                                         tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    index, index_dir = gallery
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    log = tmp_path / "serve.log"
    with serving(tiny_engine_dir, index_dir, log, token_file) as url:
        browser.get(url + "/")
        WebDriverWait(browser, 20).until(expected_conditions.visibility_of_element_located((By.ID, "token")))
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "token-ok").click()
        draw(browser, STAR)
        check_answer(answer_for(browser, 1), 1, tiny_ort_encoder, index, tmp_path)
        assert not browser.find_element(By.ID, "auth").is_displayed()  # asked once
        urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any("/thumbnail?id=" in u for u in urls) and not any(TOKEN in u for u in urls)
        assert all(src.startswith("blob:") for src in browser.execute_script(
            "return [...document.querySelectorAll('#results img')].map(i => i.src)"))
    served = log.read_text()
    assert '"path": "/thumbnail", "status": 200' in served and '"path": "/search", "status": 200' in served
    assert TOKEN not in served
