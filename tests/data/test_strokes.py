"""QuickDraw stroke data: drawings render in the PNG sketches' line style and framing (checked against
a Pillow drawing and an SVG of the same framed strokes), every JSON form of a drawing decodes the
same, `.ndjson` files are read line by line, and malformed or huge drawings get specific errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from splip_engine.data import strokes
from splip_engine.data.images import ImageDecodeError, load_image

from .imagefactory import STROKES, pillow_sketch, quickdraw_line, strokes_svg

SIDE = strokes.STROKE_RASTER_SIDE


def _framed(lines, side: int = SIDE, width: float | None = None):
    """The documented framing, computed here: the drawing's bounding box scaled so that its longer
    side plus the line width spans the square inside the margins, and centred."""
    width = strokes.LINE_WIDTH * side if width is None else width
    points = np.concatenate([np.asarray(line, float) for line in lines])  # (P, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    scale = (side * (1 - 2 * strokes.MARGIN) - width) / (high - low).max()
    offset = side / 2 - scale * (low + high) / 2
    return [[tuple(p * scale + offset) for p in np.asarray(line, float)] for line in lines]


def _grey(image) -> np.ndarray:
    return np.asarray(image.convert("L"), np.float64)  # (H, W) 0..255


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """The antialiasing tolerance of tests/data/test_svg.py: mean < 2 levels, < 1% of pixels > 64 off."""
    diff = np.abs(a - b)
    return diff.mean() < 2 and (diff > 64).mean() < 0.01


def test_a_drawing_renders_in_the_line_style_and_framing_of_a_png_and_an_svg_sketch():
    rendered = strokes.render_drawing([np.asarray(line, float) for line in STROKES])
    assert rendered.mode == "RGB" and rendered.size == (SIDE, SIDE)  # already square: nothing to pad
    drawing = _grey(rendered)
    width = strokes.LINE_WIDTH * SIDE
    framed = _framed(STROKES)
    assert _close(drawing, _grey(pillow_sketch(framed, (SIDE, SIDE), width, (SIDE, SIDE))))
    as_svg = load_image(strokes_svg(framed, (SIDE, SIDE), width)).resize((SIDE, SIDE), resample=3)
    assert _close(drawing, _grey(as_svg))
    # the tolerance tells the documented style from a thicker line or a drawing not framed
    assert not _close(drawing, _grey(pillow_sketch(framed, (SIDE, SIDE), width * 1.6, (SIDE, SIDE))))
    unframed = _framed(STROKES, width=width + 0.2 * SIDE)  # 10% more margin on each side
    assert not _close(drawing, _grey(pillow_sketch(unframed, (SIDE, SIDE), width, (SIDE, SIDE))))


def test_the_line_width_is_a_fixed_fraction_of_the_side():
    lines = [np.asarray(line, float) for line in STROKES]
    coverage = [((255 - _grey(strokes.render_drawing(lines, side))) / 255).mean() for side in (128, 256, 512, 1024)]
    np.testing.assert_allclose(coverage, coverage[1], rtol=0.05)  # ink share: 4.7-4.8% at every side


def test_a_single_point_is_a_centred_dot_one_line_width_across():
    dot = _grey(strokes.render_drawing([np.array([[7.0, 7.0]])])) < 128
    rows, cols = np.nonzero(dot)
    assert abs(rows.mean() - SIDE / 2) < 1 and abs(cols.mean() - SIDE / 2) < 1
    assert abs((cols.max() - cols.min() + 1) - strokes.LINE_WIDTH * SIDE) <= 1


def test_every_json_form_of_a_drawing_decodes_the_same(tmp_path):
    reference = np.asarray(strokes.render_drawing([np.asarray(line, float) for line in STROKES]))
    line = quickdraw_line(STROKES)
    bare = json.dumps(json.loads(line)["drawing"]).encode()
    path = tmp_path / "one.ndjson"
    path.write_bytes(line + b"\n")
    for source in (line, bare, quickdraw_line(STROKES, raw=True), bytearray(b"  \n" + line), path):
        np.testing.assert_array_equal(np.asarray(load_image(source)), reference)
    assert strokes.parse_drawing_json(line, "x")[0] == "5147947173937152"
    assert strokes.parse_drawing_json(bare, "x")[0] is None


def test_iter_ndjson_reads_key_ids_and_drawings_line_by_line(tmp_path):
    path = tmp_path / "house.ndjson"
    record = json.loads(quickdraw_line(STROKES))
    del record["key_id"]
    path.write_bytes(b"\n".join([quickdraw_line(STROKES, "11"), b"", quickdraw_line(STROKES[:1], "22", raw=True),
                                 json.dumps(record).encode()]) + b"\n")
    read = list(strokes.iter_ndjson(path))
    assert [key for key, _ in read] == ["11", "22", "line-4"]
    assert [len(drawing) for _, drawing in read] == [len(STROKES), 1, len(STROKES)]
    np.testing.assert_array_equal(read[1][1][0], np.asarray(STROKES[0], float))  # (N, 2) x, y; timing row dropped
    path.write_bytes(quickdraw_line(STROKES, "11") + b'\n{"key_id": "12", "drawing": [[[1, 2]]]}\n')
    with pytest.raises(ImageDecodeError, match=r"house\.ndjson:2: stroke 0 is not \[xs, ys\]"):
        list(strokes.iter_ndjson(path))
    with pytest.raises(ImageDecodeError, match="cannot read QuickDraw file .*missing.ndjson"):
        list(strokes.iter_ndjson(tmp_path / "missing.ndjson"))


@pytest.mark.parametrize("data, error", [
    (b'{"key_id": "1", "drawing": [[[0, 1], [0', r"malformed QuickDraw drawing JSON"),
    (b'{"key_id": "1"}', r"a JSON object without a 'drawing' key \(keys: \['key_id'\]\)"),
    (b'{"drawing": []}', r"must be a non-empty list of strokes .*\(empty\)"),
    (b'{"drawing": [[[0, 1], [0]]]}', r"stroke 0 is not \[xs, ys\] \(or \[xs, ys, ts\]\) of equal"),
    (b'{"drawing": [[[0, "1"], [0, 1]]]}', r"stroke 0 has non-numeric coordinates"),
    (b'{"drawing": [[[0, NaN], [0, 1]]]}', r"stroke 0 has non-finite coordinates"),
    (b'{"drawing": [[[0, 1e308], [0, -1e308]], [[-1e308], [1e308]]]}', r"span more than a float can hold"),
    (b'{"drawing": [[[0, 1' + b"0" * 400 + b'], [0, 1]]]}', r"coordinates beyond float range"),
    (b'{"a": 1}\n{"b": 2}\n', r"holds more than one JSON document \(an \.ndjson of several drawings\?\)"),
    (json.dumps({"drawing": [[[0], [0]]] * (strokes.MAX_STROKES + 1)}).encode(), r"2,001 strokes, over the limit"),
    (json.dumps({"drawing": [[[0] * 100_001, [0] * 100_001]] * 2}).encode(), r"over 200,000 points"),
    (b"[" + b" " * strokes.MAX_DRAWING_BYTES + b"]", r"a drawing larger than the limit of 4,194,304 bytes"),
], ids=["truncated", "no_drawing", "empty", "ragged", "string", "nan", "overflow_span", "huge_int", "two_lines",
        "too_many_strokes", "too_many_points", "too_many_bytes"])
def test_malformed_and_huge_drawings_get_a_specific_error(data, error):
    with pytest.raises(ImageDecodeError, match=error):
        load_image(data)
