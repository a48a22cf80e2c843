"""Device and backend choice on machines with and without a GPU, and ONNX Runtime's provider
verification. The GPU is hidden or made "present" by patching torch.cuda.is_available; a failing
CUDA provider is real: the CPU onnxruntime package, asked for CUDAExecutionProvider, falls back
to CPU, and the session's get_providers() shows it."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime
import pytest
import torch

from splip_engine import SpLIPError
from splip_engine.export import read_manifest
from splip_engine.runtime import load_engine
from splip_engine.runtime.loader import select_engine

CUDA_BUILT = ["CUDAExecutionProvider", "CPUExecutionProvider"]
pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")


@pytest.fixture
def gpu_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def ort_claims_cuda(monkeypatch):
    """onnxruntime lists the CUDA provider (as onnxruntime-gpu does) but cannot load it."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(CUDA_BUILT))


@pytest.fixture(scope="module")
def manifest(tiny_engine_dir):
    return read_manifest(tiny_engine_dir)


def test_with_cuda_hidden_auto_is_cpu_and_cuda_is_refused(tiny_engine_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    encoder = load_engine(tiny_engine_dir)  # on cpu, auto times ONNX Runtime / OpenVINO (tests/runtime/test_openvino.py)
    assert encoder.device == "cpu" and encoder.backend in ("onnxruntime", "openvino")
    with pytest.raises(SpLIPError, match=r"device='cuda' but no CUDA GPU is visible; use --device cpu"):
        load_engine(tiny_engine_dir, device="cuda")


def test_a_gpu_with_the_cpu_onnxruntime_runs_auto_on_cpu_with_one_info_line(tiny_engine_dir, manifest, gpu_visible,
                                                                            caplog):
    with caplog.at_level(logging.INFO, logger="splip_engine.runtime.loader"):
        encoder = load_engine(tiny_engine_dir, backend="onnxruntime")
    assert (encoder.backend, encoder.device) == ("onnxruntime", "cpu")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device=auto")]
    assert lines == ["device=auto: a CUDA GPU is visible but the onnxruntime package has no CUDA provider "
                     "(pip install onnxruntime-gpu); running on cpu"]
    assert encoder.embed_pixels(np.zeros((2, 3, 32, 32), np.float32), "sketch").shape == (2, 64)


def test_auto_on_a_gpu_picks_a_backend_that_runs_there(manifest, gpu_visible, monkeypatch, caplog):
    # torch + Triton only (the GPU machines lent here): the torch engine from the checkpoint
    assert select_engine(manifest, True, "auto", "auto") == ("torch", "cuda")
    # no checkpoint and no CUDA onnxruntime: nothing runs on the GPU, so cpu
    with caplog.at_level(logging.INFO, logger="splip_engine.runtime.loader"):
        assert select_engine(manifest, False, "auto", "auto") == ("onnxruntime", "cpu")
    assert "no backend that runs there is installed" in caplog.text
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(CUDA_BUILT))
    assert select_engine(manifest, True, "auto", "auto") == ("onnxruntime", "cuda")  # ORT CUDA > torch
    assert select_engine(manifest, True, "torch", "auto") == ("torch", "cuda")
    assert select_engine(manifest, True, "auto", "cpu") == ("onnxruntime", "cpu")


def test_asking_for_cuda_when_the_provider_fails_is_an_error(tiny_engine_dir, gpu_visible, ort_claims_cuda):
    with pytest.raises(SpLIPError, match=r"ONNX Runtime \S+ could not run .*sketch\.onnx on cuda: the session got "
                                         r"providers \['CPUExecutionProvider'\], not CUDAExecutionProvider .*"
                                         r"install onnxruntime-gpu .* or use --device cpu"):
        load_engine(tiny_engine_dir, backend="onnxruntime", device="cuda")


def test_auto_when_the_provider_fails_warns_and_runs_on_cpu(tiny_engine_dir, tiny_ort_encoder, gpu_visible,
                                                            ort_claims_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="splip_engine.ort_session"):
        encoder = load_engine(tiny_engine_dir)  # auto: ORT "has" CUDA, TensorRT is absent
    assert (encoder.backend, encoder.device) == ("onnxruntime", "cpu")
    assert all(s.get_providers() == ["CPUExecutionProvider"] for s in encoder.sessions.values())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.endswith("; running on cpu instead") for w in warnings)  # one per tower
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(encoder.embed_pixels(pixels, "photo"), tiny_ort_encoder.embed_pixels(pixels, "photo"))


def test_export_gates_on_the_provider_it_serves_with(tiny_model, cached_tracing, gpu_visible, ort_claims_cuda,
                                                      tmp_path, caplog):
    """A GPU with onnxruntime-gpu: the fp16 gate runs on CUDA; here the provider falls back, and
    the report says on which provider it really ran."""
    from splip_engine.export import export_engines

    with caplog.at_level(logging.WARNING, logger="splip_engine.ort_session"):
        report = export_engines(tiny_model, tmp_path / "engines", fp16=True)
    assert report, report.errors
    tried = [r.getMessage() for r in caplog.records if "could not run the probe graph on cuda" in r.getMessage()]
    assert len(tried) == 2  # the fp16 engine of each tower was sent to CUDA first
    assert {r["device"] for r in report.parity.values()} == {"cpu"}
    assert {r["fp32_graph"]["device"] for r in report.parity.values()} == {"cpu"}
