"""What real-world SVGs hold that a renderer must read (issue 20, item 3): Adobe Illustrator's
internal namespace entities, CSS percentages in opacities, raster images in `data:` URIs (decoded
under the raster guards; never any other scheme), and numbers that must be finite and bounded."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from splip_engine.data import svg
from splip_engine.data.images import ImageDecodeError, load_image

from .hostile_svgs import (OVERFLOW_PLACES, billion_laughs_svg, data_bomb_svg, data_image_svg, illustrator_svg,
                           overflow_svg, oversize_data_image_svg, parameter_entity_svg, percent_opacity_svg,
                           quadratic_blowup_svg)
from .imagefactory import encode, strokes_svg

MAGENTA = (200, 30, 90)


def _render(data: bytes) -> np.ndarray:
    return np.asarray(svg.render_svg(data, "<test>"))


def test_illustrator_namespace_entities_render_like_the_plain_document():
    np.testing.assert_array_equal(np.asarray(load_image(illustrator_svg())), _render(strokes_svg()))


@pytest.mark.parametrize("bomb, name", [(billion_laughs_svg(), "lol3"), (quadratic_blowup_svg(), "big"),
                                        (quadratic_blowup_svg(size=70_000, references=1), "big")],
                         ids=["nested", "quadratic", "one_huge_entity"])
def test_entity_expansion_is_judged_by_size(bomb, name):
    with pytest.raises(ImageDecodeError, match=rf"would expand it by over 65,536 bytes \(EntitiesForbidden\(name='{name}'"):
        svg.render_svg(bomb, "<test>")
    small = quadratic_blowup_svg(size=100, references=20)  # 2 KB of expansion: allowed
    assert svg.render_svg(small, "<test>").size == (512, 512)


def test_a_parameter_entity_reading_a_file_is_declined():
    assert (_render(parameter_entity_svg()) == 255).all()  # rendered blank: nothing was read


def test_a_stray_semicolon_after_a_value_is_ignored():
    np.testing.assert_array_equal(_render(percent_opacity_svg("0.5;")), _render(percent_opacity_svg("0.5")))


def test_percent_opacities_are_read_as_fractions():
    image = _render(percent_opacity_svg("50%"))
    np.testing.assert_array_equal(image, _render(percent_opacity_svg("0.5")))
    assert abs(int(image[256, 128, 0]) - 128) <= 2 and abs(int(image[256, 384, 0]) - 128) <= 2  # half black on white


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_data_uri_raster_image_is_rendered(fmt):
    picture = encode(Image.new("RGB", (8, 8), MAGENTA), fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    image = np.asarray(load_image(data_image_svg(picture, mime=f"image/{fmt.lower()}")))
    assert image.shape == (512, 512, 3)
    np.testing.assert_allclose(image[128:-128, 128:-128].reshape(-1, 3), np.broadcast_to(MAGENTA, (256 * 256, 3)), atol=3)  # JPEG q100


def test_a_corrupt_data_image_is_skipped_and_the_rest_drawn():
    document = data_image_svg(b"\x89PNG\r\n\x1a\nnot really").replace(b"</svg>", b'<rect width="10" height="10"/></svg>')
    image = _render(document)
    assert (image[:40, :40] == 0).all() and (image[100:] == 255).all()


@pytest.mark.parametrize("document, error", [
    (data_bomb_svg(), r"embeds a data: image refused as a decompression bomb"),
    (oversize_data_image_svg(), r"embeds a data: image of 10000x9000 = 90,000,000 pixels, over the limit of 50,000,000"),
], ids=["bomb", "over_pixel_limit"])
def test_data_image_bombs_refuse_the_document(document, error):
    with pytest.raises(ImageDecodeError, match=error):
        load_image(document)


def test_only_data_uris_are_loaded():
    picture = encode(Image.new("RGB", (8, 8), MAGENTA), "PNG")
    document = data_image_svg(picture).replace(b"data:image/png", b"file:///etc/passwd#data:image/png")
    assert (_render(document) == 255).all()


@pytest.mark.parametrize("place", sorted(OVERFLOW_PLACES))
def test_an_overflowing_number_anywhere_is_refused_naming_it(place):
    with pytest.raises(ImageDecodeError, match=r"<test>: SVG <\w+> [\w<>-]+=.* holds the number .*numeric overflow guard"):
        svg.render_svg(overflow_svg(place), "<test>")


def test_ordinary_numbers_and_names_with_digits_pass_the_number_check():
    document = (b'<svg xmlns="http://www.w3.org/2000/svg" width="210mm" height="297mm" viewBox="0 0 744.09 1052.36">'
                b'<g id="layer12345678901234" transform="matrix(1.25,0,0,-1.25,-12.5e2,1e3)">'
                b'<path d="M1e2,2E2l-3.5.5.25-1e-7z" stroke="#123456" stroke-width=".5"/></g></svg>')
    assert svg.render_svg(document, "<test>").size == (362, 512)


def test_an_svg_too_thin_to_draw_is_refused():
    with pytest.raises(ImageDecodeError, match="too thin or too small to draw"):
        svg.render_svg(b'<svg xmlns="http://www.w3.org/2000/svg" width="1e8" height="1e-8"/>', "<test>")

