"""GPU decode (runtime/gpu_decode.py) against the CPU preprocessing it must reproduce. On CPU the
same code runs torchvision's CPU JPEG decoder; nvJPEG itself is checked on GPU machines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from splip_engine.data.transforms import PreprocessSpec, preprocess_batch
from splip_engine.index import open_store
from splip_engine.runtime.embed_job import run_embed
from splip_engine.runtime.gpu_decode import PIXEL_ATOL, decode_preprocess, iter_decoded_batches, jpeg_header

from data.imagefactory import encode, make_gallery, noise_image

SPEC = PreprocessSpec(image_size=64)
SHAPES = [(80, 60), (60, 80), (64, 64), (40, 30), (17, 90), (200, 120)]  # (width, height): down, up, same


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour ramps plus noise: real-photo-like content whose resampling is not trivial."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width, ys / height, (xs + ys) / (width + height)], axis=-1) * 255
    return Image.fromarray((base + rng.normal(0, 25, base.shape)).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    blobs = [encode(_photo(w, h, seed=i), "JPEG", quality=90) for i, (w, h) in enumerate(SHAPES)]
    return blobs + [encode(_photo(50, 70, seed=9).convert("L"), "JPEG", quality=90)]  # grayscale


@pytest.mark.parametrize("modality", ["photo", "sketch"])
def test_device_preprocessing_matches_the_cpu_preprocessing(jpegs, modality):
    expected, errors = preprocess_batch(jpegs, modality, SPEC)
    got = decode_preprocess(jpegs, modality, SPEC, device="cpu")
    assert errors == [] and got.errors == [] and got.good == list(range(len(jpegs)))
    assert (got.on_gpu, got.on_cpu) == (len(jpegs), 0)  # every one went through the device path
    assert got.pixels.dtype == torch.float32 and got.pixels.shape == expected.shape
    diff = np.abs(got.pixels.numpy() - expected)  # (N, 3, S, S) normalised units
    # PIL resamples in fixed point, torch in float: at most one uint8 level apart, and rarely
    assert diff.max() <= PIXEL_ATOL
    assert (diff > 1e-6).mean() < 0.01


def test_other_formats_and_bad_files_fall_back_to_the_cpu_decoders_with_their_errors(jpegs, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: nvJPEG would not apply it
    rotated = encode(_photo(40, 24, seed=3), "JPEG", quality=95, exif=exif.tobytes())
    cmyk = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 20, 4), np.uint8), "CMYK"), "JPEG")
    (tmp_path / "missing.jpg").unlink(missing_ok=True)
    sources = [jpegs[0], encode(noise_image(30, 20), "PNG"), rotated, cmyk, jpegs[1][: len(jpegs[1]) // 2], b"",
               b"not an image at all", str(tmp_path / "missing.jpg"), jpegs[2]]
    got = decode_preprocess(sources, "photo", SPEC, device="cpu")
    expected, expected_errors = preprocess_batch(sources, "photo", SPEC)
    assert got.errors == expected_errors and [i for i, _ in got.errors] == [4, 5, 6, 7]
    assert got.good == [0, 1, 2, 3, 8] and (got.on_gpu, got.on_cpu) == (2, 7)
    fallback_rows = [1, 2, 3]  # PNG, EXIF-rotated and CMYK JPEG: decoded by the CPU path, so exactly equal
    np.testing.assert_array_equal(got.pixels.numpy()[fallback_rows], expected[fallback_rows])
    assert np.abs(got.pixels.numpy() - expected).max() <= PIXEL_ATOL


def test_jpeg_headers_are_read_without_decoding(jpegs):
    assert jpeg_header(jpegs[0]) == (60, 80, 3, 8, None)
    assert jpeg_header(jpegs[-1])[2] == 1  # grayscale
    exif = Image.Exif()
    exif[0x0112] = 8
    assert jpeg_header(encode(_photo(10, 12, 0), "JPEG", exif=exif.tobytes())) == (12, 10, 3, 8, 8)
    assert jpeg_header(b"\xff\xd8\xff\xe0\x00") is None


def test_batches_keep_the_input_order_and_name_bad_paths(tmp_path):
    bad = make_gallery(tmp_path / "g", 7)
    items = sorted((str(p.relative_to(tmp_path / "g")), str(p)) for p in (tmp_path / "g").rglob("*") if p.is_file())
    batches = list(iter_decoded_batches(items, "photo", SPEC, batch_size=4, device="cpu", readers=2))
    assert [item for b in batches for item in b.items] == items
    errors = [(b.items[i][0], reason) for b in batches for i, reason in b.errors]
    assert sorted(name for name, _ in errors) == sorted(bad)
    assert all(str(tmp_path / "g" / name) in reason for name, reason in errors)  # messages name the file
    assert sum(len(b.good) for b in batches) == 7


def test_the_embed_job_through_torchvision_decode_stores_the_same_rows(tiny_ort_encoder, tmp_path):
    bad = make_gallery(tmp_path / "gallery", 12)
    encoder = tiny_ort_encoder
    workers = run_embed(encoder, tmp_path / "gallery", tmp_path / "workers", batch_size=5, workers=0, progress=False,
                        decode="workers")
    device = run_embed(encoder, tmp_path / "gallery", tmp_path / "device", batch_size=5, workers=1, progress=False,
                       decode="torchvision")
    assert (device.embedded, device.failed) == (workers.embedded, workers.failed) == (12, len(bad))
    a, b = open_store(tmp_path / "workers"), open_store(tmp_path / "device")
    assert list(a.ids) == list(b.ids)
    assert sorted(e["path"] for e in a.errors()) == sorted(e["path"] for e in b.errors())
    cosine = np.sum(a.embeddings(np.float32) * b.embeddings(np.float32), axis=1)  # unit rows, float16 storage
    assert cosine.min() >= 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA GPU (none is visible)")
@pytest.mark.parametrize("modality", ["photo", "sketch"])
def test_nvjpeg_on_cuda_matches_the_cpu_preprocessing(jpegs, modality):
    expected, _ = preprocess_batch(jpegs, modality, SPEC)
    got = decode_preprocess(jpegs, modality, SPEC, device="cuda")
    assert got.pixels.is_cuda and got.on_gpu == len(jpegs)
    # nvJPEG's IDCT may round differently from libjpeg-turbo's: allow two more levels than the resize
    diff = np.abs(got.pixels.cpu().numpy() - expected)
    assert diff.max() <= PIXEL_ATOL + 2 / 255 / min(SPEC.std)
    assert diff.mean() <= 0.5 / 255 / min(SPEC.std)
