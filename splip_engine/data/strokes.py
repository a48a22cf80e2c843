"""QuickDraw stroke data: `.ndjson` files with one drawing per line (`{"key_id": ..., "drawing":
[[xs, ys(, ts)], ...], ...}`, raw or simplified) read and rendered in the line style of the PNG
sketches: black strokes with round caps and joins on white, the line width a fixed fraction of the
image side (LINE_WIDTH), the drawing centred in a square with a white margin (MARGIN) so that it
is framed like a PNG sketch padded to a square. Drawn 4x supersampled and box-filtered down, so
the strokes are antialiased like rasterised vector sketches."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from splip_engine.errors import ImageDecodeError

Stroke = np.ndarray  # (N, 2) float64 x, y in the drawing's coordinates (y down), N >= 1
Drawing = list[Stroke]

STROKE_RASTER_SIDE = 256
"""Side in pixels of a rendered drawing (QuickDraw's simplified drawings live in a 256 px box)."""
LINE_WIDTH = 3 / 256
"""Stroke width as a fraction of the side: 3 px at 256 (the `quickdraw` package's default; about
the stroke of Sketchy's 256 px PNG sketches)."""
MARGIN = 0.05
"""White margin on each side, as a fraction of the side."""
MAX_DRAWING_BYTES = 4 * 2**20
"""A drawing's JSON over this size is refused (QuickDraw's raw drawings are a few KB)."""
MAX_STROKES = 2_000
MAX_POINTS = 200_000
"""Drawings with more strokes or points in all are refused before rendering."""
_SUPERSAMPLE = 4


def looks_like_drawing(head: bytes) -> bool:
    """Whether the first bytes are JSON (an object or array): a QuickDraw drawing, if anything."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


def parse_drawing_json(data: bytes, name: str) -> tuple[str | None, Drawing]:
    """(key_id or None, strokes) from one drawing's JSON: an ndjson line (an object with a
    `drawing` key) or a bare drawing array. Raises ImageDecodeError naming `name`."""
    if len(data) > MAX_DRAWING_BYTES:
        raise ImageDecodeError(f"{name} is a drawing larger than the limit of {MAX_DRAWING_BYTES:,} bytes "
                               "(raise splip_engine.data.strokes.MAX_DRAWING_BYTES if it is genuine)")
    try:
        record = json.loads(data)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            raise ImageDecodeError(
                f"{name} holds more than one JSON document (an .ndjson of several drawings?); one image is one "
                "drawing: pass the file to `splip-engine embed --input` or read it with "
                "splip_engine.data.strokes.iter_ndjson") from e
        raise ImageDecodeError(f"{name}: malformed QuickDraw drawing JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise ImageDecodeError(f"{name}: malformed QuickDraw drawing JSON (not UTF-8: {e})") from e
    if isinstance(record, dict):
        if "drawing" not in record:
            raise ImageDecodeError(f"{name}: a JSON object without a 'drawing' key (keys: {sorted(record)[:8]}); "
                                   "expected one QuickDraw ndjson line")
        key_id = record.get("key_id")
        return (None if key_id is None else str(key_id)), _strokes(record["drawing"], name)
    return None, _strokes(record, name)


def render_drawing(drawing: Sequence[Stroke], side: int = STROKE_RASTER_SIDE) -> Image.Image:
    """A (side, side) RGB sketch of `drawing`: the strokes scaled to fit inside the margin, centred,
    black, LINE_WIDTH * side wide with round caps, antialiased."""
    points = np.concatenate(list(drawing))  # (P, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    big = side * _SUPERSAMPLE
    width = LINE_WIDTH * big
    extent = float((high - low).max())
    scale = (big * (1 - 2 * MARGIN) - width) / extent if extent > 0 else 0.0  # the line stays inside the margin
    offset = big / 2 - scale * (low + high) / 2  # (2,) centres the bounding box
    canvas = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(canvas)
    radius = width / 2
    for stroke in drawing:
        xy = [tuple(p) for p in (stroke * scale + offset).tolist()]
        if len(xy) > 1:
            draw.line(xy, fill=0, width=max(1, round(width)), joint="curve")
        for x, y in (xy[0], xy[-1]):  # round caps (and single-point strokes as dots)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return canvas.reduce(_SUPERSAMPLE).convert("RGB")


def iter_ndjson(path: str | os.PathLike) -> Iterator[tuple[str, Drawing]]:
    """(key_id, strokes) for each non-blank line of a QuickDraw `.ndjson` file, read line by line;
    a line without a key_id gets `line-<n>`. A bad line raises ImageDecodeError naming `path:<n>`."""
    path = Path(path)
    try:
        stream = open(path, "rb")
    except OSError as e:
        raise ImageDecodeError(f"cannot read QuickDraw file {path}: {e.strerror or e}") from e
    with stream:
        for number, line in enumerate(iter(lambda: stream.readline(MAX_DRAWING_BYTES + 1), b""), start=1):
            if line.strip():
                key_id, drawing = parse_drawing_json(line, f"{path}:{number}")
                yield (key_id if key_id is not None else f"line-{number}"), drawing


def _strokes(value: object, name: str) -> Drawing:
    """Validate a QuickDraw `drawing` ([[xs, ys(, ts)], ...]) into (N, 2) float arrays."""
    if not isinstance(value, list) or not value:
        raise ImageDecodeError(f"{name}: a QuickDraw drawing must be a non-empty list of strokes [[xs, ys], ...], "
                               f"got {type(value).__name__}{' (empty)' if value == [] else ''}")
    if len(value) > MAX_STROKES:
        raise ImageDecodeError(f"{name}: drawing of {len(value):,} strokes, over the limit of {MAX_STROKES:,} "
                               "(raise splip_engine.data.strokes.MAX_STROKES if it is genuine)")
    strokes, total = [], 0
    for i, stroke in enumerate(value):
        if not (isinstance(stroke, list) and len(stroke) in (2, 3) and all(isinstance(c, list) for c in stroke)
                and stroke[0] and len(stroke[0]) == len(stroke[1])):
            raise ImageDecodeError(f"{name}: stroke {i} is not [xs, ys] (or [xs, ys, ts]) of equal, non-zero lengths")
        total += len(stroke[0])
        if total > MAX_POINTS:
            raise ImageDecodeError(f"{name}: drawing of over {MAX_POINTS:,} points, over the limit "
                                   "(raise splip_engine.data.strokes.MAX_POINTS if it is genuine)")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in stroke[0] + stroke[1]):
            raise ImageDecodeError(f"{name}: stroke {i} has non-numeric coordinates")
        try:
            xy = np.asarray([stroke[0], stroke[1]], dtype=np.float64).T  # (N, 2)
        except OverflowError as e:  # an integer beyond float range
            raise ImageDecodeError(f"{name}: stroke {i} has coordinates beyond float range") from e
        if not np.isfinite(xy).all():
            raise ImageDecodeError(f"{name}: stroke {i} has non-finite coordinates")
        strokes.append(xy)
    if not np.isfinite(np.ptp(np.concatenate(strokes), axis=0)).all():  # e.g. -1e308 .. 1e308
        raise ImageDecodeError(f"{name}: the drawing's coordinates span more than a float can hold")
    return strokes
