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
from splip_engine.runtime import gpu_decode
from splip_engine.runtime.gpu_decode import PIXEL_ATOL, TorchvisionDecoder, decode_preprocess, jpeg_header
from splip_engine.runtime.inputs import InputOptions, file_units
from splip_engine.runtime.pipeline import DecodePool

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
    assert jpeg_header(jpegs[0]) == (60, 80, 3, 8, None, 0xC0)  # baseline
    assert jpeg_header(jpegs[-1])[2] == 1  # grayscale
    exif = Image.Exif()
    exif[0x0112] = 8
    assert jpeg_header(encode(_photo(10, 12, 0), "JPEG", exif=exif.tobytes())) == (12, 10, 3, 8, 8, 0xC0)
    assert jpeg_header(encode(_photo(10, 12, 0), "JPEG", progressive=True))[-1] == 0xC2
    assert jpeg_header(b"\xff\xd8\xff\xe0\x00") is None


def test_the_job_decoder_keeps_the_input_order_and_names_bad_paths(tmp_path):
    bad = make_gallery(tmp_path / "g", 7)
    items = sorted((str(p.relative_to(tmp_path / "g")), str(p)) for p in (tmp_path / "g").rglob("*") if p.is_file())
    pool = DecodePool(0, InputOptions(), "photo", SPEC, 4, TorchvisionDecoder(device="cpu", readers=2))
    batches = list(pool.run(file_units(items, "g", size=4)))
    assert all(isinstance(b.pixels, torch.Tensor) and len(b.pixels) == len(b.ids) for b in batches)
    assert [i for b in batches for i in b.ids] == [i for i, _ in items if i not in bad]
    errors = [(e["id"], e["reason"]) for b in batches for e in b.errors]
    assert sorted(name for name, _ in errors) == sorted(bad)
    assert all(str(tmp_path / "g" / name) in reason for name, reason in errors)  # messages name the file


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
    # nvJPEG's IDCT rounds differently from libjpeg-turbo's: bounded as torchvision's own
    # CUDA-vs-CPU decode test bounds it, by the mean difference in levels (< 2), not the maximum
    levels = np.abs(got.pixels.cpu().numpy() - expected) * np.asarray(SPEC.std).reshape(1, 3, 1, 1) * 255
    assert levels.mean() < 2


def _with_frame(jpeg: bytes, marker: int) -> bytes:
    """`jpeg` with its baseline frame header (FFC0) relabelled as another frame kind."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at + 1] + bytes([marker]) + jpeg[at + 2:]


@pytest.mark.parametrize("marker", [0xC3, 0xC9, 0xC5, 0xCB])  # lossless, arithmetic, hierarchical, both
def test_jpeg_kinds_nvjpeg_refuses_go_to_the_cpu_decoder_before_the_batch(jpegs, marker):
    odd = _with_frame(jpegs[0], marker)
    assert jpeg_header(odd)[-1] == marker and not gpu_decode._gpu_decodable(odd, 10**8)
    assert gpu_decode._gpu_decodable(jpegs[0], 10**8)
    batch = decode_preprocess([jpegs[1], odd, jpegs[2]], "photo", SPEC, device="cpu")
    assert batch.on_gpu == 2 and batch.on_cpu == 1  # the batched device call never saw it
    assert {0, 2} <= set(batch.good) and {i for i, _ in batch.errors} <= {1}  # the CPU decoder's verdict on it


def test_images_of_one_size_are_resized_together_with_the_same_result(jpegs):
    batch = [jpegs[0], jpegs[3], jpegs[0], jpegs[1], jpegs[3]]  # sizes repeat: one resize call per size
    together = decode_preprocess(batch, "photo", SPEC, device="cpu").pixels
    alone = torch.cat([decode_preprocess([blob], "photo", SPEC, device="cpu").pixels for blob in batch])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


def test_the_job_decoder_keeps_the_encoders_device_index(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(gpu_decode, "gpu_decode_available", lambda device: True)  # no GPU here
    encoder = SimpleNamespace(device="cuda", torch_device=torch.device("cuda", 1))
    assert gpu_decode.choose_decoder("auto", encoder).device == torch.device("cuda", 1)
