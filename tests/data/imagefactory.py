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
