"""Every engine graph (fp32, fp16, int8; sketch and photo; and TensorRT's fp16 input) is valid ONNX,
and export refuses to write one that is not."""
from __future__ import annotations

import onnx
import pytest

from splip_engine.export import exporter
from splip_engine.export.precision import TENSORRT_FP16_BLOCKED_OPS, convert_precision
from splip_engine.export.validate import onnx_problem


@pytest.mark.parametrize("modality", ["sketch", "photo"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_engine_graph_passes_the_full_checker_and_strict_inference(traced, tiny_model, modality, precision):
    engine = convert_precision(traced(tiny_model, modality), precision)
    assert onnx_problem(engine) is None
    onnx.checker.check_model(engine, full_check=True)  # the exact check, raising on failure
    onnx.shape_inference.infer_shapes(engine, check_type=True, strict_mode=True)


def test_the_tensorrt_fp16_graph_is_valid_onnx(traced, tiny_model):
    # the sketch tower only: the photo tower's graph differs in constants, not in op types
    engine = convert_precision(traced(tiny_model, "sketch", 18, "math"), "fp16", TENSORRT_FP16_BLOCKED_OPS)
    assert onnx_problem(engine) is None
    assert {n.op_type for n in engine.graph.node} >= {"Softmax", "LayerNormalization"}


def _with_stale_value_info(graph):
    """What the fp16 converter used to leave: a value_info whose type contradicts its initializer
    (there: float32 declared for a float16 initializer)."""
    initializer = graph.graph.initializer[0]
    wrong = onnx.TensorProto.FLOAT if initializer.data_type != onnx.TensorProto.FLOAT else onnx.TensorProto.FLOAT16
    graph.graph.value_info.append(onnx.helper.make_tensor_value_info(initializer.name, wrong, list(initializer.dims)))
    return graph


def test_the_check_catches_stale_value_info(traced, tiny_model):
    broken = _with_stale_value_info(convert_precision(traced(tiny_model, "sketch"), "fp16"))
    assert "elem type" in onnx_problem(broken)


def test_export_writes_nothing_when_a_graph_is_not_valid_onnx(tiny_model, cached_tracing, monkeypatch, tmp_path):
    monkeypatch.setattr(exporter, "convert_precision",
                        lambda graph, precision: _with_stale_value_info(convert_precision(graph, precision)))
    report = exporter.export_engines(tiny_model, tmp_path / "engines")
    assert not report and not (tmp_path / "engines").exists()
    assert any(e.startswith("sketch tower: the fp32 graph is not valid ONNX (") and "elem type" in e
               for e in report.errors)
    assert report.onnx_check["photo"] != "valid"
