"""load_engine + Encoder.embed: equal to the model from paths, PIL images and arrays alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from splip_engine import SpLIPError, load_checkpoint
from splip_engine.data.images import ImageDecodeError
from splip_engine.data.transforms import PreprocessSpec, preprocess
from splip_engine.runtime import load_engine

from data.imagefactory import random_images


def test_embed_matches_the_model_from_paths_pil_and_arrays(tiny_checkpoint, tmp_path):
    arrays, paths = random_images(tmp_path, 3, seed=0)
    encoder = load_engine(tiny_checkpoint, backend="torch", device="cpu", batch_size=2)
    model = load_checkpoint(tiny_checkpoint).eval()
    spec = PreprocessSpec.for_model(model)
    for modality in ("sketch", "photo"):
        with torch.no_grad():
            expected = model.encode(torch.from_numpy(np.stack([preprocess(a, modality, spec) for a in arrays])),
                                    modality).numpy()
        for images in (paths, [Image.fromarray(a) for a in arrays], arrays):
            got = encoder.embed(images, modality)
            assert got.dtype == np.float32 and got.shape == (3, encoder.embedding_dim)
            np.testing.assert_allclose(got, expected, atol=1e-5)  # same weights, batch split differs


def test_empty_and_large_query_batches(tiny_checkpoint):
    encoder = load_engine(tiny_checkpoint, backend="torch", batch_size=64)
    assert encoder.embed([], "sketch").shape == (0, encoder.embedding_dim)
    pixels = np.zeros((130, 3, encoder.image_size, encoder.image_size), np.float32)
    out = encoder.embed_pixels(pixels, "sketch")
    assert out.shape == (130, encoder.embedding_dim)
    np.testing.assert_allclose(out, out[:1].repeat(130, 0), atol=1e-6)


def test_bad_inputs_get_specific_errors(tiny_checkpoint, tmp_path):
    encoder = load_engine(tiny_checkpoint, backend="torch")
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(ImageDecodeError, match="image 1"):
        encoder.embed([np.zeros((8, 8, 3), np.uint8), str(tmp_path / "bad.jpg")], "photo")
    with pytest.raises(SpLIPError, match="modality='drawing'"):
        encoder.embed([np.zeros((8, 8, 3), np.uint8)], "drawing")
    with pytest.raises(SpLIPError, match="this engine takes"):
        encoder.embed_pixels(np.zeros((1, 3, 5, 5), np.float32), "photo")


def test_load_engine_refuses_bad_paths_and_options(tiny_checkpoint, tmp_path):
    with pytest.raises(SpLIPError, match="does not exist"):
        load_engine(tmp_path / "missing")
    with pytest.raises(SpLIPError, match="backend='magic'"):
        load_engine(tiny_checkpoint, backend="magic")
    with pytest.raises(SpLIPError, match="device='gpu0'"):
        load_engine(tiny_checkpoint, device="gpu0")
    with pytest.raises(SpLIPError, match="is a checkpoint, not an engine dir"):
        load_engine(tiny_checkpoint, backend="onnxruntime")


def test_cuda_without_a_visible_gpu_is_refused_on_every_machine(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # hidden, so this runs on GPU machines too
    with pytest.raises(SpLIPError, match=r"device='cuda' but no CUDA GPU is visible; use --device cpu"):
        load_engine(tiny_checkpoint, device="cuda")
    assert load_engine(tiny_checkpoint, device="auto").device == "cpu"
