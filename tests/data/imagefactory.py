"""Builders of good and bad image files for the data tests (everything in memory, tiny)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


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
