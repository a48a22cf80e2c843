"""Builders of good and bad image files for the data tests (everything in memory, tiny)."""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """`image` saved in format `fmt` as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR is patched (with a fixed CRC) to claim width x height:
    a decompression bomb header that costs nothing to make."""
    data = bytearray(encode(Image.new("1", (4, 4)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image of uniform noise (so every pixel matters in comparisons)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------- sketches in vector forms
Polyline = list[tuple[float, float]]

STROKES: list[Polyline] = [  # a house with a chimney and a sun, in a 300 x 200 canvas (y down)
    [(40, 180), (40, 90), (150, 30), (260, 90), (260, 180), (40, 180)],
    [(120, 180), (120, 120), (170, 120), (170, 180)],
    [(200, 62), (200, 25), (225, 25), (225, 76)],
    [(60, 40), (80, 30), (95, 50), (70, 62), (58, 48)],
]
CANVAS = (300, 200)  # (width, height)
STROKE_WIDTH = 4.0  # in canvas units


def strokes_svg(strokes: list[Polyline] = STROKES, canvas: tuple[int, int] = CANVAS, width: float = STROKE_WIDTH,
                extra: str = "", prolog: str = "") -> bytes:
    """An SVG of black round-capped polylines on a transparent canvas, as sketch apps export
    them; `extra` is markup inserted after the strokes, `prolog` text before the <svg> element."""
    lines = "".join(
        f'<polyline points="{" ".join(f"{x},{y}" for x, y in line)}" fill="none" stroke="black" '
        f'stroke-width="{width}" stroke-linecap="round" stroke-linejoin="round"/>' for line in strokes)
    return (f'{prolog}<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{canvas[0]}" height="{canvas[1]}" viewBox="0 0 {canvas[0]} {canvas[1]}">{lines}{extra}</svg>'
            ).encode()


def pillow_sketch(strokes: list[Polyline], canvas: tuple[int, int], width: float, out_size: tuple[int, int],
                  supersample: int = 4) -> Image.Image:
    """The same strokes drawn by Pillow: black, `width` canvas units wide, round caps and joins, on
    white, scaled from `canvas` to `out_size` (supersampled, then box-filtered: antialiased)."""
    big = (out_size[0] * supersample, out_size[1] * supersample)
    scale = big[0] / canvas[0]
    image = Image.new("L", big, 255)
    draw = ImageDraw.Draw(image)
    radius = width * scale / 2
    for line in strokes:
        points = [(x * scale, y * scale) for x, y in line]
        draw.line(points, fill=0, width=round(width * scale), joint="curve")
        for x, y in points:  # round caps and joins
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return image.reduce(supersample).convert("RGB")


def quickdraw_line(strokes: list[Polyline], key_id: str = "5147947173937152", raw: bool = False) -> bytes:
    """One QuickDraw ndjson line of `strokes` (`raw`: with the timing row of the raw data)."""
    drawing = [[[x for x, _ in line], [y for _, y in line]] + ([list(range(len(line)))] if raw else [])
               for line in strokes]
    record = {"word": "house", "countrycode": "DE", "timestamp": "2017-03-01 12:00:00.0", "recognized": True,
              "key_id": key_id, "drawing": drawing}
    return json.dumps(record).encode()


def use_bomb_svg(levels: int = 8, fan_out: int = 10) -> bytes:
    """<use> references nested `levels` deep, each level using the one below `fan_out` times:
    fan_out ** levels elements drawn from a few hundred bytes (the vector "billion laughs")."""
    groups = ['<g id="l0"><path d="M0 0 L1 1" stroke="black"/></g>']
    groups += [f'<g id="l{i}">' + f'<use href="#l{i - 1}"/>' * fan_out + "</g>" for i in range(1, levels + 1)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><defs>{"".join(groups)}</defs>'
            f'<use href="#l{levels}"/></svg>').encode()


def make_gallery(root, n_good: int, seed: int = 0) -> list[str]:
    """n_good random JPEG/PNG photos in class subfolders, plus bad files; returns the bad ids."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (rng.integers(20, 60), rng.integers(20, 60), 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img {i:03d}.{'jpg' if i % 2 else 'png'}")
    (root / "class0" / "empty.jpg").write_bytes(b"")
    (root / "class1" / "notes.txt").write_text("not an image")
    (root / "class2" / "truncated.png").write_bytes((root / "class2" / "img 002.png").read_bytes()[:60])
    return ["class0/empty.jpg", "class1/notes.txt", "class2/truncated.png"]


def random_images(directory, count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """`count` random uint8 RGB arrays and the PNG files they were saved to."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (int(rng.integers(24, 48)), int(rng.integers(24, 48)), 3), dtype=np.uint8)
              for _ in range(count)]
    paths = []
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(directory / f"{i}.png")
        paths.append(str(directory / f"{i}.png"))
    return arrays, paths
