"""The static results page (`search --html`, the demo's results.html): says what was searched, a
legend that counts relevant and other hits, every hit framed with a ✓ / ✗ badge, names escaped; in
headless Chromium it fits an 800 px window (hits and long names wrap) and the frames show on any photo."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from splip_engine.serve.results_page import render_results_html, write_results_html

LONG = "a_very_long_gallery_file_name_without_any_space_" * 3 + ".jpg"


@pytest.fixture
def results(tmp_path):
    """Two queries of 10 hits each over photos of one colour (a frame of that colour would vanish)."""
    paths = []
    for i, colour in enumerate([(19, 138, 54), (198, 40, 40)] * 5):
        paths.append(tmp_path / f"{i}{LONG}")
        Image.new("RGB", (64, 48), colour).save(paths[-1], format="JPEG")
    sketches = [tmp_path / "star_<b>.png", tmp_path / "other.png"]
    for sketch in sketches:
        Image.new("RGB", (32, 32), "white").save(sketch)
    return [{"query": str(sketch), "results": [{"rank": r + 1, "id": f"cls{r % 2}/{p.name}", "path": str(p),
                                                "score": 0.9 - r / 100} for r, p in enumerate(paths)]}
            for sketch in sketches]


def test_the_page_says_what_was_searched_and_marks_every_hit(results):
    relevant = {results[0]["query"]: {h["id"] for h in results[0]["results"] if h["id"].startswith("cls0/")}}
    page = render_results_html(results, title="t", relevant=relevant,
                               about=["Gallery: all 20 photos", "Model: tiny <engine>"])
    assert "<p>Gallery: all 20 photos</p>" in page and "tiny &lt;engine&gt;" in page
    assert "5 of 10 hits" in page and "not relevant, 5 of 10" in page  # the second query's hits are not judged
    assert page.count('<figure class="ok">') == 5 and page.count('<figure class="bad">') == 5
    assert page.count(">✓</span>") == 5 and page.count(">✗</span>") == 5 and page.count('<figure class="">') == 10
    assert "star_&lt;b&gt;.png" in page and "<b>.png" not in page
    assert page.count("<img") == 2 * 11
    unmarked = render_results_html(results)
    assert "legend" not in unmarked.split("</style>")[1] and "✓" not in unmarked


@pytest.mark.slow  # starts a browser
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (bash .ci/setup installs them)")
def test_the_page_fits_a_narrow_window_and_frames_show_on_photos_of_the_frame_colour(results, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    relevant = {results[0]["query"]: {h["id"] for h in results[0]["results"] if h["id"].startswith("cls0/")}}
    out = write_results_html(results, tmp_path / "results.html", relevant=relevant, about=["Gallery: g"])
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=800,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(out.as_uri())
        width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width  # no horizontal scrolling: every hit is on screen
        rows = driver.execute_script("return new Set([...document.querySelectorAll('.hits figure')]"
                                     ".slice(0, 10).map(f => f.getBoundingClientRect().top)).size")
        assert rows >= 2  # the 10 hits wrap onto several lines
        # frames that show on a photo of their own colour: thick, solid vs dashed, a white ring, a ✓ / ✗ badge
        frames = driver.execute_script(
            "return ['ok', 'bad'].map(c => { const f = document.querySelector('figure.' + c),"
            " s = getComputedStyle(f.querySelector('img')), m = f.querySelector('.mark');"
            " return [s.outlineStyle, parseFloat(s.outlineWidth), [s.paddingTop, s.backgroundColor], m.textContent,"
            " m.offsetWidth]; })")
        driver.save_screenshot(str(tmp_path / "results.png"))
    finally:
        driver.quit()
    (ok_style, ok_width, ok_ring, ok_mark, ok_size), (bad_style, bad_width, bad_ring, bad_mark, bad_size) = frames
    assert (ok_style, bad_style) == ("solid", "dashed") and min(ok_width, bad_width) >= 4
    assert ok_ring == bad_ring == ["4px", "rgb(255, 255, 255)"]
    assert (ok_mark, bad_mark) == ("✓", "✗") and min(ok_size, bad_size) > 0
