"""Exported engines through load_engine: ONNX Runtime equals PyTorch within the export gate, the
auto choice, and TensorRT's clear refusal where it is missing. (Integrity -- tampered files, newer
formats -- is tests/reliability/test_engine_integrity.py's matrix.)"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from splip_engine import SpLIPError, load_checkpoint
from splip_engine.data.transforms import preprocess
from splip_engine.runtime import load_engine

from data.imagefactory import random_images


def test_onnxruntime_engine_equals_pytorch_from_paths_pil_and_arrays(tiny_engine_dir, tiny_checkpoint, tmp_path):
    arrays, paths = random_images(tmp_path, 5, seed=1)
    onnx = load_engine(tiny_engine_dir, backend="onnxruntime", device="cpu")
    torch_engine = load_engine(tiny_engine_dir, backend="torch", device="cpu")
    assert onnx.backend == "onnxruntime" and torch_engine.backend == "torch"
    for modality in ("sketch", "photo"):
        reference = torch_engine.embed(arrays, modality)
        for images in (paths, [Image.fromarray(a) for a in arrays], arrays):
            # the fp32 export gate: max abs diff <= 1e-4 vs PyTorch
            np.testing.assert_allclose(onnx.embed(images, modality), reference, atol=1e-4)
    model = load_checkpoint(tiny_checkpoint).eval()
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([preprocess(a, "photo", onnx.spec) for a in arrays]))
        direct = model.encode(pixels, "photo").numpy()
    np.testing.assert_allclose(onnx.embed(arrays, "photo"), direct, atol=1e-4)


def test_tensorrt_on_cpu_is_refused_by_the_loader(tiny_engine_dir):
    with pytest.raises(SpLIPError, match=r"^backend='tensorrt' needs device='cuda' and a GPU$"):
        load_engine(tiny_engine_dir, backend="tensorrt", device="cpu")


def test_tensorrt_backend_without_tensorrt_says_so_itself(tiny_engine_dir, monkeypatch):
    """A GPU is 'present' (patched) so the loader hands over to TensorRTEncoder, whose own check
    must name the missing TensorRT (not the loader's generic device error)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(SpLIPError, match=r"^the tensorrt backend is unavailable \(TensorRT is not installed "):
        load_engine(tiny_engine_dir, backend="tensorrt", device="cuda")
