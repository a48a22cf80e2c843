"""Robust image decoding: any path, bytes, PIL image or uint8 array -> one RGB PIL image, or a
specific ImageDecodeError (ENGINE.md "Bad input gets a clear error").

Decoding order: header only -> size checks (zero size, decompression bomb) -> decode of the
first frame -> EXIF orientation -> mode to RGB (transparency composited onto white, CMYK
converted, 16-bit scaled to 8-bit). PIL's warnings during decoding are logged, not raised.
Sketches in their native vector forms are sniffed from their first bytes, whatever the file is
called: an SVG document is rasterised safely (data/svg.py), one QuickDraw drawing's JSON (an
ndjson line or a bare `drawing` array) is rendered (data/strokes.py), both in a child process
under the decode budget of time and memory (data/sandbox.py). Raster decoding stays in process:
its cost is bounded by the pixel limit.

JPEG draft: given `draft_size`, a JPEG larger than it is decoded in the DCT domain at the
smallest scale (1/2, 1/4 or 1/8, libjpeg's scaled IDCT) that still covers `draft_size` in both
dimensions, which skips most of the decoding work (a 2048 x 1536 photo for a 224 px model is
decoded at 512 x 384). The caller's resize then works from that image (see transforms.preprocess).
"""
from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from splip_engine.data import sandbox, strokes, svg
from splip_engine.errors import ImageDecodeError

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 50_000_000
"""Images with more pixels are refused from their header, before decoding (decompression bombs).
Change it here or pass `max_pixels=` to `load_image`. PIL's own guard (2 x
PIL.Image.MAX_IMAGE_PIXELS, about 179 MP) still applies above that."""

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

WHITE = (255, 255, 255)
_TRANSPARENT_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WEBP",
}


def load_image(source: ImageSource, *, max_pixels: int | None = None,
               draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `source` into an RGB PIL image, upright (EXIF) and opaque (transparency -> white).

    `source`: a file path, encoded bytes (any raster format PIL reads, an SVG document, one
    QuickDraw drawing's JSON), a PIL image, or a uint8 array (H, W), (H, W, 3) or (H, W, 4). `max_pixels` (default MAX_IMAGE_PIXELS) bounds width x height of encoded images.
    `draft_size` (w, h): the least size the caller needs; a larger JPEG is decoded at a reduced
    DCT scale that still covers it (the module docstring). Other formats ignore it.
    Raises ImageDecodeError with a specific message for every kind of bad input.
    """
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        image = _decode_path(Path(source), limit, draft_size)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = "<bytes>"
        image = _decode_stream(io.BytesIO(source), name, limit, draft_size)
    elif isinstance(source, Image.Image):
        name = "<PIL image>"
        image = _loaded(source, name)
    elif isinstance(source, np.ndarray):
        name = "<array>"
        image = _from_array(source)
    else:
        raise ImageDecodeError(
            f"unsupported image source of type {type(source).__name__}; "
            "pass a file path, encoded bytes, a PIL image or a uint8 HxWx3 numpy array"
        )
    return _to_rgb(_upright(image, name), name)


def _decode_path(path: Path, limit: int, draft_size: tuple[int, int] | None) -> Image.Image:
    """Decode a file after checking it exists, is a file and is not empty (read lazily: the
    size checks see only the header, so a huge file is never read whole)."""
    if not path.exists():
        raise ImageDecodeError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageDecodeError(f"{path} is a directory, not an image file")
    try:
        with open(path, "rb") as stream:
            return _decode_stream(stream, str(path), limit, draft_size)
    except OSError as e:
        raise ImageDecodeError(f"cannot read image file {path}: {e.strerror or e}") from e


def _decode_stream(stream: BinaryIO, name: str, limit: int, draft_size: tuple[int, int] | None) -> Image.Image:
    """Decode with PIL's warnings captured and logged: they neither leak nor (under -W error)
    turn a readable image into an exception, whatever the caller's warning filters are."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = _decode_checked(stream, name, limit, draft_size)
    for warning in caught:
        if not issubclass(warning.category, Image.DecompressionBombWarning):  # our own limit decides
            log.warning("%s: %s", name, warning.message)
    return image


def _decode_checked(stream: BinaryIO, name: str, limit: int, draft_size: tuple[int, int] | None) -> Image.Image:
    """Open the header, refuse zero-size and over-limit images, then decode the first frame
    (a JPEG at the DCT scale `draft_size` allows)."""
    head = stream.read(1024)
    if not head:
        raise ImageDecodeError(f"{name} is empty (0 bytes), not an image")
    stream.seek(0)
    vector = _vector_decoder(head)
    if vector is not None:
        return vector(stream, name)
    try:
        image = Image.open(stream)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{name} refused as a possible decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError(f"{name}: {_describe_unreadable(head)}") from e
    except Exception as e:  # PIL plugins raise many types on corrupt headers
        raise ImageDecodeError(f"{name}: {_damage(e)} image header ({type(e).__name__}: {e})") from e
    width, height = image.size
    if width * height == 0:
        raise ImageDecodeError(f"{name} has zero size ({width}x{height})")
    if width * height > limit:
        raise ImageDecodeError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(decompression-bomb guard); pass max_pixels= or raise "
            "splip_engine.data.images.MAX_IMAGE_PIXELS if the image is genuine"
        )
    if draft_size is not None and image.format == "JPEG":
        image.draft(None, draft_size)  # mode kept; size >= draft_size in both dimensions
    return _loaded(image, name)


def _vector_decoder(head: bytes):
    """The decoder for a vector sketch format these first bytes start (SVG, QuickDraw JSON), or None;
    it renders in a child process under the decode budget (data/sandbox.py)."""
    if svg.looks_like_svg(head):
        return lambda stream, name: sandbox.render_vector("svg", _read_at_most(stream, svg.MAX_SVG_BYTES), name)
    if strokes.looks_like_drawing(head):
        return lambda stream, name: sandbox.render_vector(
            "drawing", _read_at_most(stream, strokes.MAX_DRAWING_BYTES), name)
    return None


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """The stream's bytes, reading one past `limit` so an over-limit document is seen as such
    without reading it whole."""
    return stream.read(limit + 1)


def _loaded(image: Image.Image, name: str) -> Image.Image:
    """Force the (first frame's) pixel decode so truncation and corruption surface here."""
    try:
        image.seek(0)
        image.load()
    except Exception as e:  # truncated data: OSError; corrupt streams: SyntaxError, ValueError, ...
        raise ImageDecodeError(f"{name}: {_damage(e)} image data ({type(e).__name__}: {e})") from e
    if image.width * image.height == 0:
        raise ImageDecodeError(f"{name} has zero size ({image.width}x{image.height})")
    return image


def _damage(error: Exception) -> str:
    """"truncated" when PIL ran out of data, else "corrupt"."""
    return "truncated" if "truncated" in str(error).lower() else "corrupt"


def _describe_unreadable(head: bytes) -> str:
    """Say what an unidentifiable file looks like (from its first bytes): SVG, text, a known
    format with a bad header."""
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            if fmt == "PNG" and len(head) >= 24:
                width, height = struct.unpack(">II", head[16:24])
                if width * height == 0:
                    return f"PNG with zero size ({width}x{height})"
            return f"{fmt} data with a corrupt header (or zero width/height)"
    try:
        head.decode("utf-8")
        return "a text file, not an image"
    except UnicodeDecodeError:
        return "not an image in any format PIL can read"


def _from_array(array: np.ndarray) -> Image.Image:
    """Wrap a uint8 (H, W), (H, W, 3) or (H, W, 4) array as a PIL image."""
    if array.dtype != np.uint8:
        raise ImageDecodeError(
            f"image array has dtype {array.dtype}; expected uint8 in 0..255 "
            "(e.g. (x * 255).round().astype(np.uint8) for floats in 0..1)"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageDecodeError(f"image array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.shape[0] * array.shape[1] == 0:
        raise ImageDecodeError(f"image array has zero size {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def _upright(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block is logged and ignored."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            return image  # upright already: skip exif_transpose's full copy
        return ImageOps.exif_transpose(image)
    except Exception as e:  # malformed EXIF must not cost the image
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", name, e)
        return image


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Convert any PIL mode to RGB: alpha onto white, 16-bit scaled to 8-bit, CMYK/P/L/1 converted."""
    try:
        if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
            rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
        if image.mode in _SIXTEEN_BIT_MODES:
            levels = np.clip(np.asarray(image).astype(np.int64), 0, 65535)  # (H, W) 16-bit levels
            return Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as e:  # modes (or mode + transparency pairs) PIL cannot convert
        raise ImageDecodeError(f"{name}: unsupported pixel mode {image.mode!r} ({e})") from e
