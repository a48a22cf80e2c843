"""TensorRT plans (GPU machines with TensorRT only): build from ONNX, MHA inspection, parity through TensorRT."""
from __future__ import annotations

import pytest

from splip_engine.export import export_engines, read_manifest, verify_files
from splip_engine.export.tensorrt import tensorrt_unavailable


_MISSING = tensorrt_unavailable()
pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))]


def test_plans_build_and_pass_parity_through_tensorrt(tiny_model, cached_tracing, tmp_path):
    out = tmp_path / "engines"
    report = export_engines(tiny_model, out, fp16=True, formats="tensorrt", max_batch=8)
    assert report, report.errors
    manifest = read_manifest(out)
    verify_files(out, manifest)
    trt = manifest["tensorrt"]
    assert trt["plans"] == {"sketch": "sketch.plan", "photo": "photo.plan"}
    assert trt["latency_plans"] == {"sketch": "sketch.b1.plan", "photo": "photo.b1.plan"}
    assert trt["profiles"]["throughput"] == {"min_batch": 1, "opt_batch": 8, "max_batch": 8}
    assert all(result["passed"] for result in trt["parity"].values()) and len(trt["parity"]) == 4
    assert isinstance(trt["inspection"]["sketch"]["mha_fused"], bool) and trt["inspection"]["sketch"]["layers"] > 0
    assert "timing.cache" in manifest["files"]


def test_timing_cache_is_reused_by_the_next_build(tiny_model, cached_tracing, tmp_path):
    out = tmp_path / "engines"
    assert export_engines(tiny_model, out, formats="all", max_batch=4)
    first = (out / "timing.cache").stat().st_size
    assert export_engines(tiny_model, out, formats="all", max_batch=4)
    assert (out / "timing.cache").stat().st_size >= first > 0
