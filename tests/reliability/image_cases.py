"""The bad and odd image inputs of ENGINE.md ("Bad input gets a clear error"), one `ImageCase`
each: the file to write, and either the specific error it must get or the upright RGB pixels a
correct decoder reads from it, computed here without splip_engine's decoder (so a case also
checks that decoding is right, not only that it does not fail). The files are built by
tests/data/imagefactory.py's builders; everything is tiny and seeded."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data.imagefactory import STROKES, encode, noise_image, png_with_size, quickdraw_line, strokes_svg, use_bomb_svg

Pixels = np.ndarray  # (H, W, 3) uint8, upright RGB


@dataclass(frozen=True)
class ImageCase:
    """One kind of input. Exactly one of `error` / `expected` is set."""

    kind: str
    filename: str
    data: bytes | None  # the file's bytes; None: `make` writes no file (see `directory`)
    error: str | None = None  # regex the ImageDecodeError message must match
    expected: Callable[[Path], Pixels] | None = None  # what a correct decoder reads from the file
    wrong: Callable[[Path], Pixels] | None = None  # what a decoder without this case's handling reads
    directory: bool = False  # a directory named like an image instead of a file
    path_only: bool = False  # an input only a path can be (nothing to upload over HTTP)

    def make(self, folder: Path) -> Path:
        """Write the case into `folder` (where a directory or nothing is the case, make that)."""
        path = folder / self.filename
        if self.directory:
            path.mkdir()
        elif self.data is not None:
            path.write_bytes(self.data)
        return path


def _decoded(path: Path) -> np.ndarray:
    """The stored pixels as PIL decodes them, no orientation or mode handling (for lossy files)."""
    with Image.open(path) as image:
        return np.asarray(image)


def _gray_to_rgb(gray: np.ndarray) -> Pixels:
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def _fixed(pixels: np.ndarray) -> Callable[[Path], Pixels]:
    return lambda path: pixels


_rng = np.random.default_rng(2024)

_NOISE = np.asarray(noise_image(20, 14, seed=5))  # (14, 20, 3)
_JPEG = encode(noise_image(64, 48, seed=1), "JPEG", quality=90)
_PNG = encode(noise_image(64, 48, seed=2), "PNG")

_LEVELS = _rng.integers(0, 65536, (14, 18), dtype=np.uint16)  # 16-bit grey levels
_GRAY = _rng.integers(0, 256, (12, 22), dtype=np.uint8)

_PALETTE = [(0, 0, 0), (220, 30, 30), (30, 200, 40), (20, 40, 230)]  # entry 0 is the transparent one
_INDICES = _rng.integers(0, len(_PALETTE), (16, 20), dtype=np.uint8)
_palette_image = Image.fromarray(_INDICES, "P")
_palette_image.putpalette([v for colour in _PALETTE for v in colour])
_PALETTE_RGB = np.asarray(_PALETTE, np.uint8)[_INDICES]  # (16, 20, 3), black where transparent

_RGBA = np.concatenate([_rng.integers(0, 256, (10, 16, 3)), 255 * _rng.integers(0, 2, (10, 16, 1))], axis=2).astype(np.uint8)

_FRAMES = [np.where(_rng.random((12, 10, 1)) < 0.5, fg, bg).astype(np.uint8)
           for fg, bg in [((255, 0, 0), (255, 255, 255)), ((0, 0, 255), (0, 0, 0))]]  # 2-colour frames: exact in GIF


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    return encode(noise_image(40, 24, seed=3), "JPEG", quality=95, exif=exif.tobytes())


def _cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(_rng.integers(0, 256, (16, 20, 4), dtype=np.uint8), "CMYK"), "JPEG", quality=90)


def _cmyk_to_rgb(path: Path) -> Pixels:
    """The standard CMYK -> RGB: each channel (255 - C) * (255 - K) / 255."""
    cmyk = _decoded(path).astype(np.int64)  # (H, W, 4)
    return np.round((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255).astype(np.uint8)


def _cairo_rendering(svg: bytes, size: tuple[int, int]) -> Callable[[Path], Pixels]:
    """What CairoSVG itself draws of `svg` at `size` on white (the documented raster size: longer
    side 512, aspect kept), without the engine's sniffing, sanitising and sizing in between."""
    def render(path: Path) -> Pixels:
        import cairosvg

        png = cairosvg.svg2png(bytestring=svg, output_width=size[0], output_height=size[1], background_color="white")
        return _decoded_bytes(png)
    return render


def _decoded_bytes(data: bytes) -> Pixels:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _drawing_rendering(path: Path) -> Pixels:
    """The renderer's drawing of STROKES (the reference for the plumbing; the renderer itself is
    checked against Pillow and SVG drawings in tests/data/test_strokes.py)."""
    from splip_engine.data.strokes import render_drawing

    return np.asarray(render_drawing([np.asarray(line, float) for line in STROKES]))


_SVG_SIZE = (512, 341)  # strokes_svg's 300 x 200 canvas, longer side 512
_REFERENCES = ('<image href="/nonexistent/black.png" width="300" height="200"/>'
               '<image xlink:href="http://127.0.0.1:9/photo.png" width="300" height="200"/>'
               '<use href="http://127.0.0.1:9/remote.svg#r"/><style>@import "http://127.0.0.1:9/s.css";</style>&xxe;')

CASES: list[ImageCase] = [
    ImageCase("empty_file", "empty.jpg", b"", error=r"is empty \(0 bytes\), not an image"),
    ImageCase("truncated_jpeg", "truncated.jpg", _JPEG[: len(_JPEG) // 2], error="truncated image data"),
    ImageCase("truncated_png", "truncated.png", _PNG[: len(_PNG) // 2], error="truncated image data"),
    ImageCase("random_bytes", "random.jpg", _rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(),
              error="not an image in any format PIL can read"),
    ImageCase("zero_size", "zero.png", png_with_size(0, 4), error=r"PNG with zero size \(0x4\)"),
    ImageCase("one_pixel", "one.png", encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"),
              expected=_fixed(np.array([[[200, 30, 90]]], np.uint8))),
    ImageCase("decompression_bomb", "bomb.png", png_with_size(30000, 30000),
              error=r"refused as a possible decompression bomb: Image size \(900000000 pixels\)"),
    ImageCase("over_pixel_limit", "huge.png", png_with_size(10000, 9000),
              error=r"10000x9000 = 90,000,000 pixels, over the limit of 50,000,000 \(decompression-bomb guard\)"),
    ImageCase("cmyk_jpeg", "cmyk.jpg", _cmyk_jpeg(), expected=_cmyk_to_rgb,
              wrong=lambda path: _decoded(path)[..., :3]),  # C, M, Y read as R, G, B
    ImageCase("sixteen_bit_png", "deep.png", encode(Image.fromarray(_LEVELS), "PNG"),
              expected=_fixed(_gray_to_rgb(np.round(_LEVELS / 257))),  # 0..65535 scaled to 0..255
              wrong=_fixed(_gray_to_rgb(np.minimum(_LEVELS, 255)))),  # clipped, PIL's plain convert
    ImageCase("palette_png_with_transparency", "palette.png", encode(_palette_image, "PNG", transparency=0),
              expected=_fixed(np.where(_INDICES[..., None] == 0, np.uint8(255), _PALETTE_RGB)),  # white behind
              wrong=_fixed(_PALETTE_RGB)),
    ImageCase("rgba_png", "alpha.png", encode(Image.fromarray(_RGBA, "RGBA"), "PNG"),
              expected=_fixed(np.where(_RGBA[..., 3:] == 0, np.uint8(255), _RGBA[..., :3])),
              wrong=_fixed(_RGBA[..., :3])),
    ImageCase("grayscale_png", "gray.png", encode(Image.fromarray(_GRAY, "L"), "PNG"), expected=_fixed(_gray_to_rgb(_GRAY))),
    ImageCase("animated_gif", "animated.gif",
              encode(Image.fromarray(_FRAMES[0]), "GIF", save_all=True, append_images=[Image.fromarray(_FRAMES[1])],
                     duration=40, loop=0),
              expected=_fixed(_FRAMES[0]), wrong=_fixed(_FRAMES[1])),
    ImageCase("exif_rotated_jpeg", "rotated.jpg", _exif_rotated_jpeg(),
              expected=lambda path: np.rot90(_decoded(path), k=-1),  # the stored pixels turned 90 degrees clockwise
              wrong=_decoded),
    ImageCase("svg_sketch", "sketch.svg", strokes_svg(), expected=_cairo_rendering(strokes_svg(), _SVG_SIZE)),
    ImageCase("svg_with_external_references", "linked.svg",
              strokes_svg(extra=_REFERENCES, prolog='<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'),
              expected=_cairo_rendering(strokes_svg(), _SVG_SIZE)),  # as if the references were not there
    ImageCase("malformed_svg", "truncated.svg", strokes_svg()[:-30], error=r"malformed SVG \(XML error: "),
    ImageCase("svg_reference_bomb", "bomb.svg", use_bomb_svg(),
              error=r"is an SVG whose <use> references draw over 50,000 elements \(a reference bomb\)"),
    ImageCase("quickdraw_drawing", "drawing.ndjson", quickdraw_line(STROKES) + b"\n", expected=_drawing_rendering),
    ImageCase("malformed_quickdraw_drawing", "broken.ndjson", quickdraw_line(STROKES)[:-40],
              error="malformed QuickDraw drawing JSON"),
    ImageCase("text_file", "notes.txt", b"a shopping list, not a photo\n", error="a text file, not an image"),
    ImageCase("directory_named_like_an_image", "folder.png", None, directory=True, path_only=True,
              error="is a directory, not an image file"),
    ImageCase("missing_file", "missing.jpg", None, path_only=True, error="image file not found"),
    ImageCase("unicode_path_with_spaces", "ünïcödé 写真 with spaces.png", encode(Image.fromarray(_NOISE), "PNG"),
              expected=_fixed(_NOISE)),
]
CASES_BY_KIND = {case.kind: case for case in CASES}
assert len(CASES_BY_KIND) == len(CASES)

