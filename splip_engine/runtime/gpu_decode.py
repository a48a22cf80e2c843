"""GPU decode for GPU embedding jobs: JPEGs decoded in batches by nvJPEG
(`torchvision.io.decode_jpeg(..., device="cuda")`) and preprocessed on the GPU the way
data/transforms.py does it on CPU; everything else goes through the CPU decoders, so bad files
get exactly today's errors (and are listed by the job).

CPU fallback, per image: not a JPEG; a JPEG that is not baseline / extended / progressive
Huffman (lossless, arithmetic-coded and hierarchical frames: nvJPEG refuses them, and one refused
image fails the whole batched call), CMYK / YCCK (4 components), not 8-bit, over the
decompression-bomb limit, EXIF-rotated (nvJPEG does not apply EXIF orientation), without its
end-of-image marker (truncated), or that nvJPEG refuses; a path that cannot be read.

Preprocessing on the device, as data/transforms.py: photos resize the shorter side to S
(torchvision's rounding) then centre-crop; sketches pad to a white square then resize; both
resize bicubic with antialias (PIL's filter: a = -0.5, support scaled when downsampling), round
to uint8 levels as PIL does, then x / 255, minus mean, over std. Images of one size are resized
in one call, and the batch is normalised once (mean / std copied to the device once per batch). Measured against the CPU path
(tests/runtime/test_gpu_decode.py, torchvision's CPU decoder running this same code): resampled
levels differ by at most 1 (PIL works in fixed point, torch in float), so
PIXEL_ATOL = 1.5 / 255 / min(std) in normalised units. nvJPEG's IDCT may differ from
libjpeg-turbo's: its test bounds the mean difference (< 2 levels, as torchvision's own
CUDA-vs-CPU decode test does), and the GPU suite checks the embeddings (cosine) on CUDA.

torchvision deprecates its image decoders in 0.29 in favour of TorchCodec; decode_jpeg still
works there and is what this module calls.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from splip_engine.data.images import MAX_IMAGE_PIXELS
from splip_engine.data.transforms import (
    PREPROCESS_MODES,
    PreprocessSpec,
    preprocess_batch,
)
from splip_engine.runtime.pipeline import BatchDecoder

PIXEL_ATOL = 1.5 / 255 / 0.26130258
"""Largest per-pixel difference from the CPU preprocessing, normalised units (module docstring)."""
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
GPU_SOF_MARKERS = {0xC0, 0xC1, 0xC2}
"""Frames nvJPEG decodes: baseline, extended sequential and progressive, Huffman-coded (not
lossless 0xC3 / 0xC7 / 0xCB / 0xCF, arithmetic 0xC9-0xCF, hierarchical 0xC5-0xC7 / 0xCD-0xCF)."""
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
    rows = _preprocess(decoded, modality, spec, device)
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
    """A Huffman baseline / extended / progressive 8-bit gray or YCbCr JPEG, complete, upright,
    within the pixel limit."""
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9":
        return False
    header = jpeg_header(data)
    if header is None:
        return False
    height, width, components, precision, orientation, frame = header
    return (frame in GPU_SOF_MARKERS and components in (1, 3) and precision == 8 and 0 < width * height <= max_pixels
            and orientation in (None, 1))


def jpeg_header(data: bytes) -> tuple[int, int, int, int, int | None, int] | None:
    """(height, width, components, bits per sample, EXIF orientation or None, frame marker
    0xC0..0xCF) from a JPEG's markers (read up to the first frame header), or None when they
    cannot be read."""
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
            return height, width, components, precision, orientation, marker
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


def _preprocess(images: dict[int, torch.Tensor], modality: str, spec: PreprocessSpec,
                device: torch.device) -> dict[int, torch.Tensor]:
    """Decoded (3, H, W) uint8 images on the device -> (3, S, S) float32 normalised rows, as
    data/transforms.py: one resize call per input size, one normalisation for the batch."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in images.items():
        by_shape.setdefault(tuple(image.shape), []).append(index)
    order, levels = [], []
    for indices in by_shape.values():
        order += indices
        levels.append(_levels(torch.stack([images[i] for i in indices]), modality, spec.image_size))
    if not order:
        return {}
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)  # once per batch
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    pixels = (torch.cat(levels) / 255 - mean) / std  # (n, 3, S, S)
    return dict(zip(order, pixels))


def _levels(images: torch.Tensor, modality: str, size: int) -> torch.Tensor:
    """(n, 3, H, W) uint8 of one size -> (n, 3, S, S) float32 levels 0..255 (modality's mode)."""
    if PREPROCESS_MODES[modality] == "pad_square_white":
        square = _pad_square_white(images)
        return square.float() if square.shape[-1] == size else _resize(square, size, size)
    return _resize_center_crop(images, size)


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> (n, 3, height, width) float32 levels as PIL's bicubic resize: a
    horizontal pass, then a vertical one, each rounded and clipped to uint8 levels (PIL keeps the
    intermediate image in 8 bits)."""
    levels = images.float()
    if levels.shape[-1] != width:
        levels = _bicubic(levels, (levels.shape[-2], width))
    if levels.shape[-2] != height:
        levels = _bicubic(levels, (height, width))
    return levels


def _bicubic(levels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = F.interpolate(levels, size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255)


def _pad_square_white(images: torch.Tensor) -> torch.Tensor:
    """Centre (n, 3, H, W) on white squares of the longer side (PIL paste offsets)."""
    count, _, height, width = images.shape
    side = max(height, width)
    if height == width:
        return images
    canvas = torch.full((count, 3, side, side), 255, dtype=images.dtype, device=images.device)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[:, :, top:top + height, left:left + width] = images
    return canvas


def _resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to `size` (torchvision Resize rounding), then the centre size x size crop."""
    height, width = images.shape[-2:]
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    levels = images.float() if (new_w, new_h) == (width, height) else _resize(images, new_h, new_w)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return levels[:, :, top:top + size, left:left + size]


def gpu_decode_available(device: str) -> bool:
    """True when images can be decoded on `device` here: CUDA visible and torchvision's decoder."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class TorchvisionDecoder(BatchDecoder):
    """The embed job's batch decoder for GPU jobs (runtime/pipeline.py): the decode workers only
    read the records (tar members, parquet bytes, file paths); here, in the job's process, the
    files among them are read by `readers` threads and the batch goes through `decode_preprocess`
    on `device`, so the pixels come out normalised on the device and stay there for the encoder."""

    in_workers = False

    def __init__(self, device: str | torch.device = "cuda", readers: int = 4):
        self.device, self.readers = device, max(1, readers)

    def decode(self, sources: Sequence[Source], modality: str, spec: PreprocessSpec) -> tuple[torch.Tensor, list]:
        """(pixels (n_good, 3, S, S) float32 on the device, [(index, reason)] of the bad sources)."""
        with ThreadPoolExecutor(max_workers=self.readers) as pool:
            data = list(pool.map(_read, sources))
        batch = decode_preprocess(sources, modality, spec, self.device, data=data)
        return batch.pixels, batch.errors

    def normalise(self, pixels: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
        return pixels  # decode_preprocess normalised them already


DECODERS = ("auto", "workers", "torchvision")


def choose_decoder(decode: str, encoder) -> BatchDecoder:
    """The embed job's decoder: "workers" decodes with PIL in the decode worker processes;
    "torchvision" decodes JPEGs in batches on the encoder's device (nvJPEG on CUDA) through
    `decode_preprocess`, pixels staying there; "auto" is torchvision when the encoder runs on
    CUDA, else workers."""
    from splip_engine.errors import SpLIPError

    if decode not in DECODERS:
        raise SpLIPError(f"decode={decode!r}: choose one of {DECODERS}")
    device = getattr(encoder, "torch_device", None) or getattr(encoder, "device", "cpu")  # keeps "cuda:N"
    if decode == "torchvision" or (decode == "auto" and gpu_decode_available(device)):
        return TorchvisionDecoder(device=device)
    return BatchDecoder()
