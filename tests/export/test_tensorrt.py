"""TensorRT plans (GPU machines with TensorRT only): build from ONNX, fusion from the inspector,
parity through TensorRT, the timing cache reused by the next build."""
from __future__ import annotations

import pytest

from splip_engine.export import export_engines, read_manifest, verify_files
from splip_engine.export import tensorrt as trt_export

_MISSING = trt_export.tensorrt_unavailable()
pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt, pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))]


def test_plans_build_and_pass_parity_through_tensorrt(tiny_model, cached_tracing, tmp_path):
    out = tmp_path / "engines"
    report = export_engines(tiny_model, out, fp16=True, formats="tensorrt", max_batch=8)
    assert report, report.errors
    manifest = read_manifest(out)
    verify_files(out, manifest)
    trt = manifest["tensorrt"]
    assert trt["version"] == trt_export.tensorrt_version()
    assert trt["typing"] == trt_export.plan_typing(trt["version"])
    assert trt["plans"] == {"sketch": "sketch.plan", "photo": "photo.plan"}
    assert trt["latency_plans"] == {"sketch": "sketch.b1.plan", "photo": "photo.b1.plan"}
    assert trt["profiles"]["throughput"] == {"min_batch": 1, "opt_batch": 8, "max_batch": 8}
    assert all(result["passed"] for result in trt["parity"].values()) and len(trt["parity"]) == 4
    for tower in ("sketch", "photo"):
        inspection = trt["inspection"][tower]
        # a fused verdict must point at attention kernels (an fp16 build is where TensorRT fuses
        # MHA); a Myelin-compiled plan may show neither MHA nor SoftMax layers: "unknown", with
        # the evidence saying why, is an accepted answer, and the report carries it
        assert inspection["mha_fused"] in (True, False, "unknown"), inspection
        assert (inspection["mha_layers"] > 0) == (inspection["mha_fused"] is True)
        assert inspection["mha_fused"] is not False or inspection["softmax_layers"] > 0
        assert inspection["evidence"]
    reported = "\n".join(report.lines())
    assert all(f"attention fused: {trt['inspection'][t]['mha_fused']}" in reported for t in ("sketch", "photo"))
    assert trt["timing_cache"]["file"] in manifest["files"]


def test_timing_cache_is_reused_by_the_next_build(tiny_model, cached_tracing, tmp_path, monkeypatch):
    out = tmp_path / "engines"
    handed = []
    build = trt_export.build_plan

    def spy(*args, timing_cache=b"", **kwargs):
        handed.append(bytes(timing_cache))
        return build(*args, timing_cache=timing_cache, **kwargs)

    monkeypatch.setattr(trt_export, "build_plan", spy)
    assert export_engines(tiny_model, out, formats="all", max_batch=4)
    first = read_manifest(out)["tensorrt"]["timing_cache"]
    saved = (out / first["file"]).read_bytes()
    assert first["reused"] is False and handed[0] == b"" and saved
    handed.clear()
    assert export_engines(tiny_model, out, formats="all", max_batch=4)
    second = read_manifest(out)["tensorrt"]["timing_cache"]
    assert second["reused"] is True and second["bytes_in"] == len(saved)
    assert handed[0] == saved  # the next export's first build started from the saved cache
    assert second["file"] == trt_export.timing_cache_name(second["gpu"], second["tensorrt"])
