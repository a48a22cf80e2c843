"""Exported engines through load_engine: ONNX Runtime equals PyTorch within the export gate, the
auto choice, integrity checks, and TensorRT's clear refusal where it is missing."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from splip_engine import SpLIPError, load_checkpoint
from splip_engine.data.transforms import preprocess
from splip_engine.export import export_engines
from splip_engine.runtime import load_engine

from .conftest import random_images


@pytest.fixture(scope="module")
def engine_dir(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "fp32"
    assert export_engines(tiny_checkpoint, out)
    return out


def test_onnxruntime_engine_equals_pytorch_from_paths_pil_and_arrays(engine_dir, tiny_checkpoint, tmp_path):
    arrays, paths = random_images(tmp_path, 5, seed=1)
    onnx = load_engine(engine_dir, backend="auto", device="cpu")
    torch_engine = load_engine(engine_dir, backend="torch", device="cpu")
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


def test_tampered_engine_file_is_refused(engine_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(engine_dir, copy)
    data = bytearray((copy / "sketch.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "sketch.onnx").write_bytes(bytes(data))
    with pytest.raises(SpLIPError, match="sketch.onnx"):
        load_engine(copy, backend="onnxruntime")


def test_newer_manifest_format_is_refused(engine_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(engine_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpLIPError, match="newer"):
        load_engine(copy)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
                    reason="TensorRT and a GPU are present: the refusal path does not apply")
def test_tensorrt_backend_without_tensorrt_or_gpu_fails_clearly(engine_dir):
    with pytest.raises(SpLIPError, match="tensorrt|TensorRT|CUDA"):
        load_engine(engine_dir, backend="tensorrt", device="cuda" if torch.cuda.is_available() else "cpu")
