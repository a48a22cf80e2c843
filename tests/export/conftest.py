"""Shared fixtures: the tiny SpLIP model, its traced tower graphs, and one exported engine dir."""
from __future__ import annotations

import pytest

from splip_engine import SpLIPConfig, build_model


@pytest.fixture(scope="session")
def tiny_model():
    return build_model(SpLIPConfig(clip_model="tiny", pretrained="")).eval()


@pytest.fixture(scope="session")
def traced(tiny_model):
    """export_tower with a cache: tracing dominates export time, and every tiny model in these
    tests is the same seed-0 model, so each (modality, opset, attention) is traced once. Returns
    fresh copies, since precision lowering and the tamper tests edit graphs."""
    import onnx
    from splip_engine.export.graph import export_tower

    cache = {}

    def cached_export_tower(model, modality, opset=23, attention="contrib"):
        key = (modality, opset, attention)
        if key not in cache:
            cache[key] = export_tower(tiny_model, modality, opset=opset, attention=attention)
        copy = onnx.ModelProto()
        copy.CopyFrom(cache[key])
        return copy

    return cached_export_tower


@pytest.fixture
def cached_tracing(monkeypatch, traced):
    """Route export_engines' tracing through the session cache (for the tiny model only)."""
    from splip_engine.export import exporter

    monkeypatch.setattr(exporter, "export_tower", traced)


@pytest.fixture(scope="session")
def tiny_engine_dir(tmp_path_factory, tiny_model, traced):
    """An fp32 engine dir of the tiny model, exported once for the whole session."""
    from splip_engine.export import exporter

    out = tmp_path_factory.mktemp("engines") / "tiny"
    original = exporter.export_tower
    exporter.export_tower = traced
    try:
        report = exporter.export_engines(tiny_model, out)
    finally:
        exporter.export_tower = original
    assert report, report.errors
    return out
