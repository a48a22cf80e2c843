"""GPU decode for GPU embedding jobs: JPEGs decoded in batches by nvJPEG
(`torchvision.io.decode_jpeg(..., device="cuda")`) and preprocessed on the GPU the way
data/transforms.py does it on CPU; everything else goes through the CPU decoders, so bad files
get exactly today's errors (and are listed by the job).

CPU fallback, per image: not a JPEG; a JPEG that is CMYK / YCCK (4 components), not 8-bit, over
the decompression-bomb limit, EXIF-rotated (nvJPEG does not apply EXIF orientation), without its
end-of-image marker (truncated), or that nvJPEG refuses; a path that cannot be read.

Preprocessing on the device, as data/transforms.py: photos resize the shorter side to S
(torchvision's rounding) then centre-crop; sketches pad to a white square then resize; both
resize bicubic with antialias (PIL's filter: a = -0.5, support scaled when downsampling), round
to uint8 levels as PIL does, then x / 255, minus mean, over std. Measured against the CPU path
(tests/runtime/test_gpu_decode.py, torchvision's CPU decoder running this same code): resampled
levels differ by at most 1 (PIL works in fixed point, torch in float), so
PIXEL_ATOL = 1.5 / 255 / min(std) in normalised units. nvJPEG's IDCT may differ from
libjpeg-turbo's by a level or two more; the GPU suite checks the embeddings (cosine) on CUDA.

torchvision deprecates its image decoders in 0.29 in favour of TorchCodec; decode_jpeg still
works there and is what this module calls.
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from splip_engine.data.images import MAX_IMAGE_PIXELS
from splip_engine.data.transforms import PREPROCESS_MODES, PreprocessSpec, preprocess_batch

PIXEL_ATOL = 1.5 / 255 / 0.26130258
"""Largest per-pixel difference from the CPU preprocessing, normalised units (module docstring)."""
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_EXIF_ORIENTATION = 0x0112

Source = str | Path | bytes


@dataclass
class DecodedBatch:
    """Preprocessed pixels of the good sources, in input order, and the bad ones' reasons."""

    pixels: torch.Tensor  # (n_good, 3, S, S) float32 on the decode device
    good: list[int]  # positions in the input of the rows of `pixels`
    errors: list[tuple[int, str]] = field(default_factory=list)  # (position, reason), as preprocess_batch
    on_gpu: int = 0  # images decoded by nvJPEG (torchvision's decoder on the device)
    on_cpu: int = 0  # images decoded by the CPU fallback (including the bad ones)


def decode_preprocess(sources: Sequence[Source], modality: str, spec: PreprocessSpec,
                      device: str | torch.device = "cuda", max_pixels: int = MAX_IMAGE_PIXELS,
                      data: Sequence[bytes | None] | None = None) -> DecodedBatch:
    """The one entry point: image files or encoded bytes -> DecodedBatch on `device`. JPEGs that
    qualify (module docstring) are decoded together by torchvision on `device` (nvJPEG on CUDA;
    on CPU the same code runs torchvision's CPU decoder, which is how it is tested here); every
    other source takes the CPU decoders of data/images.py, whose errors name the source.
    `data`: the sources' bytes when already read (None where unreadable)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    data = list(data) if data is not None else [_read(source) for source in sources]
    jpeg = [i for i, blob in enumerate(data) if blob is not None and _gpu_decodable(blob, max_pixels)]
    decoded: dict[int, torch.Tensor] = {}
    if jpeg:
        tensors = [torch.frombuffer(bytearray(data[i]), dtype=torch.uint8) for i in jpeg]
        try:
            images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
            decoded = dict(zip(jpeg, images))
        except RuntimeError:  # one bad image fails the whole batched call: retry one by one
            for i, tensor in zip(jpeg, tensors):
                try:
                    decoded[i] = decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    pass  # the CPU decoder gives the precise error (or decodes it)
    rows = {i: _preprocess(image, modality, spec) for i, image in decoded.items()}
    fallback = [i for i in range(len(sources)) if i not in rows]
    errors: list[tuple[int, str]] = []
    if fallback:
        pixels, bad = preprocess_batch([sources[i] for i in fallback], modality, spec)
        errors = [(fallback[j], message) for j, message in bad]
        failed = {j for j, _ in bad}
        cpu_rows = iter(torch.from_numpy(pixels).to(device))
        rows.update({i: next(cpu_rows) for j, i in enumerate(fallback) if j not in failed})
    good = sorted(rows)
    size = spec.image_size
    stacked = torch.stack([rows[i] for i in good]) if good else torch.empty((0, 3, size, size), device=device)
    return DecodedBatch(stacked, good, sorted(errors), on_gpu=len(decoded), on_cpu=len(fallback))


def _read(source: Source) -> bytes | None:
    """Encoded bytes of `source`, or None when it cannot be read (the CPU path names why)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError:
        return None


def _gpu_decodable(data: bytes, max_pixels: int) -> bool:
    """A baseline/progressive 8-bit gray or YCbCr JPEG, complete, upright, within the pixel limit."""
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9":
        return False
    header = jpeg_header(data)
    if header is None:
        return False
    height, width, components, precision, orientation = header
    return (components in (1, 3) and precision == 8 and 0 < width * height <= max_pixels
            and orientation in (None, 1))


def jpeg_header(data: bytes) -> tuple[int, int, int, int, int | None] | None:
    """(height, width, components, bits per sample, EXIF orientation or None) from a JPEG's
    markers (read up to the first frame header), or None when they cannot be read."""
    offset, orientation = 2, None
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        (length,) = struct.unpack(">H", data[offset + 2:offset + 4])
        segment = data[offset + 4:offset + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:])
        if marker in _SOF_MARKERS:
            if len(segment) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            return height, width, components, precision, orientation
        if marker == 0xDA:  # start of scan before any frame header
            return None
        offset += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of an EXIF TIFF block (IFD0), or None."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for entry in range(count):
        start = ifd + 2 + 12 * entry
        if start + 12 > len(tiff):
            return None
        tag, _, _, value = struct.unpack(order + "HHIH", tiff[start:start + 10])
        if tag == _EXIF_ORIENTATION:
            return value
    return None


def _preprocess(image: torch.Tensor, modality: str, spec: PreprocessSpec) -> torch.Tensor:
    """(3, H, W) uint8 on the device -> (3, S, S) float32 normalised, as data/transforms.py."""
    size = spec.image_size
    if PREPROCESS_MODES[modality] == "pad_square_white":
        square = _pad_square_white(image)
        levels = square.float() if square.shape[-1] == size else _resize(square, size, size)
    else:
        levels = _resize_center_crop(image, size)
    mean = torch.tensor(spec.mean, device=image.device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=image.device).view(3, 1, 1)
    return (levels / 255 - mean) / std


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, height, width) float32 levels as PIL's bicubic resize: a horizontal
    pass, then a vertical one, each rounded and clipped to uint8 levels (PIL keeps the
    intermediate image in 8 bits)."""
    levels = image[None].float()  # (1, 3, H, W)
    if levels.shape[-1] != width:
        levels = _bicubic(levels, (levels.shape[-2], width))
    if levels.shape[-2] != height:
        levels = _bicubic(levels, (height, width))
    return levels[0]


def _bicubic(levels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = F.interpolate(levels, size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255)


def _pad_square_white(image: torch.Tensor) -> torch.Tensor:
    """Centre (3, H, W) on a white square of its longer side (PIL paste offsets)."""
    _, height, width = image.shape
    side = max(height, width)
    if height == width:
        return image
    canvas = torch.full((3, side, side), 255, dtype=image.dtype, device=image.device)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[:, top:top + height, left:left + width] = image
    return canvas


def _resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to `size` (torchvision Resize rounding), then the centre size x size crop."""
    _, height, width = image.shape
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    levels = image.float() if (new_w, new_h) == (width, height) else _resize(image, new_h, new_w)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return levels[:, top:top + size, left:left + size]


def gpu_decode_available(device: str) -> bool:
    """True when images can be decoded on `device` here: CUDA visible and torchvision's decoder."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class DevicePixelBatch:
    """The embed job's batch (runtime/pipeline.PixelBatch's fields) with pixels on the device."""

    items: list
    pixels: torch.Tensor  # (n_good, 3, S, S) float32 on the device
    good: list[int]
    errors: list[tuple[int, str]]
    decode_s: float
    on_gpu: int = 0


def iter_decoded_batches(items: Sequence[tuple[str, Source]], modality: str, spec: PreprocessSpec, batch_size: int,
                         device: str = "cuda", readers: int = 4, prefetch: int = 2) -> Iterator[DevicePixelBatch]:
    """The embed job's batches through `decode_preprocess`: the files of the next `prefetch`
    batches are read by `readers` threads while this one decodes (memory stays bounded)."""
    chunks = [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, readers)) as pool:
        def read(chunk: list) -> list[Future]:
            return [pool.submit(_read, source) for _, source in chunk]

        pending: deque[list[Future]] = deque(read(chunk) for chunk in chunks[:prefetch])
        for index, chunk in enumerate(chunks):
            data = [future.result() for future in pending.popleft()]
            if index + prefetch < len(chunks):
                pending.append(read(chunks[index + prefetch]))
            start = time.perf_counter()
            batch = decode_preprocess([source for _, source in chunk], modality, spec, device, data=data)
            yield DevicePixelBatch(chunk, batch.pixels, batch.good, batch.errors, time.perf_counter() - start,
                                   batch.on_gpu)


DECODERS = ("auto", "workers", "torchvision")


def pixel_batches(items: Sequence[tuple[str, Source]], modality: str, encoder, batch_size: int, workers: int = 2,
                  decode: str = "auto") -> Iterator:
    """The embed job's batches: "workers" decodes with PIL in worker processes
    (runtime/pipeline.py); "torchvision" decodes JPEGs in batches on the encoder's device
    (nvJPEG on CUDA) through `decode_preprocess`, pixels staying there; "auto" is torchvision
    when the encoder runs on CUDA, else workers."""
    from splip_engine.errors import SpLIPError
    from splip_engine.runtime.pipeline import iter_pixel_batches

    if decode not in DECODERS:
        raise SpLIPError(f"decode={decode!r}: choose one of {DECODERS}")
    if decode == "torchvision" or (decode == "auto" and gpu_decode_available(encoder.device)):
        return iter_decoded_batches(items, modality, encoder.spec, batch_size, device=encoder.device,
                                    readers=max(1, workers))
    return iter_pixel_batches(items, modality, encoder.spec, batch_size, workers=workers)
