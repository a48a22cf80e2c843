"""The hostile vector inputs of issue 20 as `ImageCase`s (image_cases.py): numeric overflow in every
size attribute, marker / pattern / filter / text / path bombs, deep nesting, entity tricks, `data:`
bombs and oversize rasters inside an SVG, each with the specific error it must get; and the
real-world constructs beside them that must render as an independent renderer (CairoSVG on the
plain equivalent document) draws them. HEAVY are the render bombs only the time budget stops."""
from __future__ import annotations

import numpy as np
from PIL import Image

from data.hostile_svgs import (billion_laughs_svg, data_bomb_svg, data_image_svg, deep_svg, filter_bomb_svg,
                               illustrator_svg, marker_bomb_svg, overflow_svg, oversize_data_image_svg,
                               parameter_entity_svg, path_bomb_svg, pattern_bomb_svg, percent_opacity_svg,
                               quadratic_blowup_svg, quickdraw_overflow_line, text_bomb_svg)
from data.imagefactory import encode, strokes_svg

from .image_cases import _SVG_SIZE, ImageCase, _cairo_rendering, _fixed

_OVERFLOW = r"holds the number .*, beyond the limit of 1e\+09 \(numeric overflow guard\)"
_MAGENTA_PNG = encode(Image.new("RGB", (8, 8), (200, 30, 90)), "PNG")
_TIME_BUDGET = r"rendering took longer than the decode budget of 2 s of CPU time .*--decode-timeout"

CASES: list[ImageCase] = [
    *[ImageCase(f"overflow_{place}", f"overflow_{place}.svg", overflow_svg(place), error=rf"<\w+> [\w:<>-]+=.*{_OVERFLOW}")
      for place in ("width", "height", "viewBox", "path", "stroke_width")],  # all 11 places: tests/data/test_svg_real_files.py
    ImageCase("pattern_bomb", "pattern.svg", pattern_bomb_svg(),
              error=r"needs more than the decode budget of 512 MiB of memory .*--decode-memory"),
    ImageCase("filter_bomb", "filter.svg", filter_bomb_svg(), error=r"is an SVG of 60,004 elements, over the limit"),
    ImageCase("text_bomb", "text.svg", text_bomb_svg(), error=r"is an SVG of 60,002 elements, over the limit"),
    ImageCase("deep_nesting", "deep.svg", deep_svg(), error=r"is an SVG nested 10,001 elements deep"),
    ImageCase("billion_laughs", "laughs.svg", billion_laughs_svg(),
              error=r"its internal XML entities would expand it by over 65,536 bytes"),
    ImageCase("quadratic_blowup", "quadratic.svg", quadratic_blowup_svg(),
              error=r"its internal XML entities would expand it by over 65,536 bytes"),
    ImageCase("parameter_entity", "xxe.svg", parameter_entity_svg(),  # declined: the 10 x 10 canvas stays blank
              expected=_fixed(np.full((512, 512, 3), 255, np.uint8))),
    ImageCase("data_bomb", "data_bomb.svg", data_bomb_svg(), error=r"embeds a data: image refused as a decompression bomb"),
    ImageCase("oversize_data_image", "data_huge.svg", oversize_data_image_svg(),
              error=r"embeds a data: image of 10000x9000 = 90,000,000 pixels, over the limit of 50,000,000"),
    ImageCase("quickdraw_overflow", "overflow.ndjson", quickdraw_overflow_line() + b"\n",
              error=r"stroke 0 has non-finite coordinates"),
    ImageCase("illustrator_entities", "illustrator.svg", illustrator_svg(),
              expected=_cairo_rendering(strokes_svg(), _SVG_SIZE)),
    ImageCase("percent_opacity", "percent.svg", percent_opacity_svg("50%"),
              expected=_cairo_rendering(percent_opacity_svg("0.5"), (512, 512))),
    ImageCase("data_image", "embedded.svg", data_image_svg(_MAGENTA_PNG),
              expected=_cairo_rendering(data_image_svg(_MAGENTA_PNG), (512, 512)),
              wrong=_fixed(np.full((512, 512, 3), 255, np.uint8))),  # the image dropped, as before issue 20
]
HEAVY: list[ImageCase] = [
    ImageCase("marker_bomb", "marker.svg", marker_bomb_svg(), error=_TIME_BUDGET),
    ImageCase("path_bomb", "path.svg", path_bomb_svg(), error=_TIME_BUDGET),
]
assert len({case.kind for case in CASES + HEAVY}) == len(CASES + HEAVY)
