"""SVG sketches: rendered at the line style and framing of the same strokes as a PNG sketch, nothing
the document references is read or fetched, and malformed or huge documents get specific errors."""
from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from splip_engine.data import svg
from splip_engine.data.folder import SBIRFolder
from splip_engine.data.images import ImageDecodeError, load_image
from splip_engine.data.transforms import PreprocessSpec, preprocess

from .hostile_svgs import billion_laughs_svg
from .imagefactory import CANVAS, STROKE_WIDTH, STROKES, encode, pillow_sketch, strokes_svg, use_bomb_svg
from .tripwire import recording


def _grey(image) -> np.ndarray:
    return np.asarray(image.convert("L"), np.float64)  # (H, W) 0..255


def _ink_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the dark (ink) pixels of two grey images."""
    ink_a, ink_b = a < 128, b < 128
    return (ink_a & ink_b).sum() / (ink_a | ink_b).sum()


def test_svg_renders_like_a_pillow_drawing_of_the_same_strokes():
    """Antialiasing tolerance: cairo and supersampled Pillow differ on edge pixels only, so the mean
    difference stays under 2 grey levels, under 1% of pixels differ by > 64 and the ink overlaps by
    IoU >= 0.85 (measured: 0.8, 0.45%, 0.92); the same strokes 1.5x thinner or thicker miss every
    bound (6-9 levels, 3.4-4%, IoU 0.6-0.7: checked below)."""
    rendered = load_image(strokes_svg())
    assert rendered.mode == "RGB" and rendered.size == (512, 341)  # longer side SVG_RASTER_SIDE, aspect kept
    svg_grey = _grey(rendered)
    for width, same in ((STROKE_WIDTH, True), (STROKE_WIDTH * 1.5, False), (STROKE_WIDTH / 1.5, False)):
        reference = _grey(pillow_sketch(STROKES, CANVAS, width, rendered.size))
        diff = np.abs(svg_grey - reference)
        within = diff.mean() < 2 and (diff > 64).mean() < 0.01 and _ink_iou(svg_grey, reference) >= 0.85
        assert within == same, (width, diff.mean(), (diff > 64).mean(), _ink_iou(svg_grey, reference))
    assert svg_grey[0, 0] == 255  # transparent canvas -> white


def test_svg_gets_the_framing_of_the_png_sketch_of_the_same_strokes():
    """Through the encoder preprocessing (pad to a square on white, resize to 224) the SVG and a PNG
    sketch of the same strokes agree within the antialiasing tolerance above (measured 1.7 levels
    mean, 0.5% > 64); the PNG stretched to a square instead of padded is 20 levels off."""
    spec = PreprocessSpec(image_size=224)
    scale = np.asarray(spec.std)[:, None, None] * 255  # normalised units -> grey levels
    from_svg = preprocess(strokes_svg(), "sketch", spec) * scale  # (3, 224, 224)
    png = pillow_sketch(STROKES, CANVAS, STROKE_WIDTH, CANVAS)
    for image, same in ((png, True), (png.resize((CANVAS[0], CANVAS[0])), False)):
        diff = np.abs(from_svg - preprocess(encode(image, "PNG"), "sketch", spec) * scale)
        assert (diff.mean() < 3 and (diff > 64).mean() < 0.015) == same, (diff.mean(), (diff > 64).mean())


def test_an_svg_is_sniffed_whatever_its_name_and_from_bytes(tmp_path):
    path = tmp_path / "drawing.png"
    path.write_bytes(b"\xef\xbb\xbf" + strokes_svg(prolog='<?xml version="1.0" encoding="UTF-8"?>\n'))
    expected = np.asarray(load_image(strokes_svg()))
    np.testing.assert_array_equal(np.asarray(load_image(path)), expected)
    np.testing.assert_array_equal(np.asarray(load_image(memoryview(strokes_svg()))), expected)


def test_the_standard_svg_doctype_is_accepted_without_fetching_the_dtd():
    doctype = ('<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
               '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">')
    with recording() as seen:
        image = load_image(strokes_svg(prolog=doctype))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(load_image(strokes_svg())))
    assert seen.network == []


@pytest.fixture
def listener():
    """A TCP socket listening on 127.0.0.1: the URL an SVG points at, to show nobody connects."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.3)
    yield server
    server.close()


@pytest.mark.timeout(60)  # a fetching renderer would hang on the listener (it accepts, never answers)
def test_an_svg_referencing_files_and_urls_renders_without_them_and_reads_nothing(tmp_path, listener):
    black = tmp_path / "black.png"
    black.write_bytes(encode(Image.new("RGB", (50, 50)), "PNG"))
    markup = tmp_path / "injected.svg"  # what an external entity or <use> would pull in: a black canvas
    markup.write_text('<rect xmlns="http://www.w3.org/2000/svg" id="r" width="300" height="200" fill="black"/>')
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    references = (
        f'<image href="{black}" width="300" height="200"/>'
        f'<image xlink:href="file://{black}" width="300" height="200"/>'
        f'<image href="{url}/photo.png" width="300" height="200"/>'
        f'<use href="{markup}#r"/><use xlink:href="{url}/remote.svg#r"/>'
        f'<style>@import "{url}/style.css"; @import url("file://{tmp_path}/style.css");</style>'
        f'<rect width="300" height="200" fill="url({url}/paint.svg#g)" stroke="url(file://{markup}#r)"/>'
        '<text x="10" y="20">read a font</text><script>fetch("' + url + '")</script>'
        '<foreignObject width="10" height="10"><iframe xmlns="http://www.w3.org/1999/xhtml" src="' + url + '"/>'
        '</foreignObject>&xxe;'
    )
    entity = f'<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file://{markup}">]>'
    document = tmp_path / "sketch.svg"
    document.write_bytes(strokes_svg(extra=references, prolog=entity))
    clean = np.asarray(svg.render_svg(strokes_svg(), "clean"))  # also warms up every lazy import before recording
    data = document.read_bytes()
    with recording() as seen:  # the renderer, in this process (load_image runs it in a render child)
        image = np.asarray(svg.render_svg(data, str(document)))
    assert seen.opened == [] and seen.network == []
    np.testing.assert_array_equal(np.asarray(load_image(document)), image)
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody connected
    # the strokes are all there is: the rect's url() paint is unresolvable, so it is not filled either
    np.testing.assert_array_equal(image, clean)


@pytest.mark.parametrize("data, error", [
    (strokes_svg()[:-20], r"<bytes>: malformed SVG \(XML error: "),
    (b'<?xml version="1.0"?><html><body/></html>', r"an XML document whose root is <html>, not an SVG image"),
    (billion_laughs_svg(), r"its internal XML entities would expand it by over 65,536 bytes .*entity-expansion bomb"),
    (b'<svg xmlns="http://www.w3.org/2000/svg">' + b"<g/>" * (svg.MAX_SVG_ELEMENTS + 1) + b"</svg>",
     r"is an SVG of 50,002 elements, over the limit of 50,000"),
    (b'<svg xmlns="http://www.w3.org/2000/svg">' + b" " * svg.MAX_SVG_BYTES + b"</svg>",
     r"is an SVG larger than the limit of 8,388,608 bytes"),
    (b'<svg xmlns="http://www.w3.org/2000/svg">' + b"<g>" * 1000 + b"</g>" * 1000 + b"</svg>",
     r"is an SVG nested 1,001 elements deep, over the limit of 256"),
], ids=["truncated", "not_svg", "entity_bomb", "too_many_elements", "too_many_bytes", "too_deep"])
def test_malformed_and_huge_svgs_get_a_specific_error(data, error):
    with pytest.raises(ImageDecodeError, match=error):
        load_image(data)


def test_a_reference_bomb_is_refused_before_rendering(tmp_path):
    """10 ** 8 drawn elements from 1.4 KB: CairoSVG alone spends over a minute before its own guard."""
    path = tmp_path / "bomb.svg"
    path.write_bytes(use_bomb_svg())
    with pytest.raises(ImageDecodeError, match=rf"{path} is an SVG whose <use> references draw over 50,000 elements"):
        load_image(path)
    assert load_image(use_bomb_svg(levels=3)).size == (512, 512)  # 3,211 drawn elements (x2 with <defs>) are fine


def test_a_use_cycle_is_refused():
    cycle = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><g id="a"><path d="M0 0 L5 5"/>'
             b'<use href="#a"/></g></svg>')
    with pytest.raises(ImageDecodeError, match="a <use> references an element that contains it"):
        load_image(cycle)


def test_class_folders_of_svg_sketches_are_usable(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "sketch" / name).mkdir(parents=True)
        (tmp_path / "photo" / name).mkdir(parents=True)
        (tmp_path / "sketch" / name / f"{name}_1-1.svg").write_bytes(strokes_svg())
        (tmp_path / "photo" / name / f"{name}_1.jpg").write_bytes(encode(pillow_sketch(STROKES, CANVAS, 4, CANVAS),
                                                                          "JPEG"))
    folder = SBIRFolder(tmp_path / "sketch", tmp_path / "photo")
    assert folder.classes == ("cat", "dog") and [p.name for p in folder.sketches["cat"]] == ["cat_1-1.svg"]
