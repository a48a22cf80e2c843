"""Device and backend choice on machines with and without a GPU, and ONNX Runtime's provider
verification. The GPU is hidden or made "present" by patching torch.cuda.is_available; a failing
CUDA provider is real: the CPU onnxruntime package, asked for CUDAExecutionProvider, falls back
to CPU, and the session's get_providers() shows it. A provider counts as available only when a
session really opens on it (ort_session.ort_cuda_unusable), never from get_available_providers()."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime
import pytest
import torch

from splip_engine import SpLIPError
from splip_engine import ort_session
from splip_engine.export import read_manifest
from splip_engine.runtime import load_engine
from splip_engine.runtime.loader import select_engine

CUDA_BUILT = ["CUDAExecutionProvider", "CPUExecutionProvider"]
pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")


@pytest.fixture(autouse=True)
def _fresh_provider_probe():
    """ort_cuda_unusable caches its answer per process: each test probes afresh."""
    ort_session.ort_cuda_unusable.cache_clear()
    yield
    ort_session.ort_cuda_unusable.cache_clear()


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
    assert lines == [f"device=auto: a CUDA GPU is visible but onnxruntime {onnxruntime.__version__} has no "
                     "CUDAExecutionProvider (pip install 'splip-engine[gpu]'); running on cpu"]
    assert encoder.embed_pixels(np.zeros((2, 3, 32, 32), np.float32), "sketch").shape == (2, 64)


def test_auto_on_a_gpu_picks_a_backend_that_runs_there(manifest, gpu_visible, monkeypatch, caplog):
    # torch + Triton only (the GPU machines lent here): the torch engine from the checkpoint
    assert select_engine(manifest, True, "auto", "auto") == ("torch", "cuda")
    # no checkpoint and no CUDA onnxruntime: nothing runs on the GPU, so cpu
    with caplog.at_level(logging.INFO, logger="splip_engine.runtime.loader"):
        assert select_engine(manifest, False, "auto", "auto") == ("onnxruntime", "cpu")
    assert "no backend that runs there is installed" in caplog.text
    # a working onnxruntime-gpu (faked: the probe's verdict; no CUDA session can open here)
    monkeypatch.setattr(ort_session, "ort_cuda_unusable", lambda device_id=0: None)
    assert select_engine(manifest, True, "auto", "auto") == ("onnxruntime", "cuda")  # ORT CUDA > torch
    assert select_engine(manifest, True, "torch", "auto") == ("torch", "cuda")
    assert select_engine(manifest, True, "auto", "cpu") == ("onnxruntime", "cpu")


def test_asking_for_cuda_when_the_provider_fails_is_an_error(tiny_engine_dir, gpu_visible, ort_claims_cuda):
    with pytest.raises(SpLIPError, match=r"ONNX Runtime \S+ could not run .*sketch\.onnx on cuda: the session got "
                                         r"providers \['CPUExecutionProvider'\], not CUDAExecutionProvider .*"
                                         r"install onnxruntime-gpu .* or use --device cpu"):
        load_engine(tiny_engine_dir, backend="onnxruntime", device="cuda")


def test_a_provider_that_is_listed_but_does_not_open_is_not_available(ort_claims_cuda):
    reason = ort_session.ort_cuda_unusable()
    assert reason is not None and "a CUDA session fell back to ['CPUExecutionProvider']" in reason
    assert ort_session.ort_cuda_built()  # what the old check trusted


def test_auto_never_prefers_a_broken_cuda_provider_over_the_torch_engine(manifest, gpu_visible, ort_claims_cuda,
                                                                         caplog):
    assert select_engine(manifest, True, "auto", "auto") == ("torch", "cuda")  # the working torch CUDA engine
    with caplog.at_level(logging.INFO, logger="splip_engine.runtime.loader"):
        assert select_engine(manifest, False, "auto", "auto") == ("onnxruntime", "cpu")  # nothing runs on the GPU
        assert select_engine(manifest, True, "onnxruntime", "auto") == ("onnxruntime", "cpu")
    assert "CUDA session fell back" in caplog.text


def test_auto_with_a_broken_provider_runs_onnxruntime_on_cpu_without_trying_cuda(tiny_engine_dir, tiny_ort_encoder,
                                                                                 gpu_visible, ort_claims_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="splip_engine.ort_session"):
        encoder = load_engine(tiny_engine_dir, backend="onnxruntime")  # device auto
    assert (encoder.backend, encoder.device) == ("onnxruntime", "cpu")
    assert all(s.get_providers() == ["CPUExecutionProvider"] for s in encoder.sessions.values())
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # decided before any session
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(encoder.embed_pixels(pixels, "photo"), tiny_ort_encoder.embed_pixels(pixels, "photo"))


def test_export_gates_on_the_provider_it_serves_with(tiny_model, cached_tracing, gpu_visible, ort_claims_cuda,
                                                      tmp_path, caplog):
    """A GPU with an onnxruntime that lists CUDA but cannot open a session there: the gate runs on
    cpu from the start (no failed CUDA attempt), and the report says on which provider it ran."""
    from splip_engine.export import export_engines

    with caplog.at_level(logging.WARNING, logger="splip_engine.ort_session"):
        report = export_engines(tiny_model, tmp_path / "engines", fp16=True)
    assert report, report.errors
    assert not [r for r in caplog.records if "could not run the probe graph on cuda" in r.getMessage()]
    assert {r["device"] for r in report.parity.values()} == {"cpu"}
    assert {r["fp32_graph"]["device"] for r in report.parity.values()} == {"cpu"}


def test_run_bound_writes_torch_tensors_in_place_after_synchronising_torch(tiny_engine_dir, monkeypatch):
    session, _ = ort_session.open_session(str(tiny_engine_dir / "sketch.onnx"), "cpu")
    pixels = torch.randn(3, 3, 32, 32)
    out = torch.full((3, 64), float("nan"))
    order = []
    monkeypatch.setattr(ort_session, "_synchronize_torch", lambda tensors: order.append(("sync", len(tensors))))
    real_run = session.run_with_iobinding
    monkeypatch.setattr(session, "run_with_iobinding", lambda binding: (order.append(("run", 0)), real_run(binding)))
    ort_session.run_bound(session, {"pixels": pixels}, {"embeddings": out})
    assert order == [("sync", 2), ("run", 0)]  # torch's stream first: ORT's CUDA streams do not wait for it
    expected = session.run(["embeddings"], {"pixels": pixels.numpy()})[0]
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)  # written in place, every row
