"""export_engines on the tiny model: fused attention per layer, baked constants, parity, the gate."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from splip_engine import load_checkpoint
from splip_engine.errors import SpLIPError
from splip_engine.export import export_engines, read_manifest, verify_files
from splip_engine.export.graph import count_fused_attention, expected_attention_count
from splip_engine.export.parity import onnxruntime_embedder


def test_engine_dir_has_the_contracted_layout(tiny_engine_dir, tiny_model):
    manifest = read_manifest(tiny_engine_dir)
    verify_files(tiny_engine_dir, manifest)
    assert set(manifest["files"]) == {"sketch.onnx", "photo.onnx", "checkpoint/config.json",
                                      "checkpoint/model.safetensors"}
    assert manifest["precision"] == "fp32" and manifest["opset"] == 23
    assert manifest["embedding_dim"] == 64 and manifest["image_size"] == 32
    assert manifest["input"] == {"name": "pixels", "dtype": "float32", "shape": ["batch", 3, 32, 32]}
    assert manifest["output"] == {"name": "embeddings", "dtype": "float32", "shape": ["batch", 64]}
    assert manifest["preprocess"] == {"sketch": "pad_square_white", "photo": "resize_center_crop"}
    assert manifest["model_config"] == tiny_model.cfg.to_dict()
    assert manifest["parity"]["sketch"]["passed"] and manifest["parity"]["photo"]["passed"]
    assert len(manifest["engine_hash"]) == 64


def test_attention_is_fused_once_per_transformer_layer(tiny_engine_dir, tiny_model):
    expected = len(tiny_model.clip.visual.transformer.resblocks) + len(tiny_model.clip.transformer.resblocks)
    assert expected_attention_count(tiny_model) == expected == 4
    for modality in ("sketch", "photo"):
        graph = onnx.load(str(tiny_engine_dir / f"{modality}.onnx"))
        assert count_fused_attention(graph) == (expected, "MultiHeadAttention")
        assert not [n for n in graph.graph.node if n.op_type == "Softmax"]  # no unfused attention left
        fused = read_manifest(tiny_engine_dir)["fused_attention"][modality]
        assert (fused["count"], fused["expected"]) == (expected, expected)


def test_input_independent_tensors_are_baked(tiny_engine_dir):
    graph = onnx.load(str(tiny_engine_dir / "sketch.onnx"))
    depends_on_input = {"pixels"}
    constant_nodes = []
    for node in graph.graph.node:  # nodes are topologically sorted
        if any(name in depends_on_input for name in node.input):
            depends_on_input.update(node.output)
        else:
            constant_nodes.append(node.op_type)
    assert constant_nodes == []  # V_tg, word embeddings, pooling weights: all folded to initializers
    assert not [i.name for i in graph.graph.initializer if "token_embedding" in i.name]


def test_onnx_runtime_matches_pytorch_on_fresh_batches(tiny_engine_dir, tiny_model):
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for modality in ("sketch", "photo"):
        embed = onnxruntime_embedder(onnx.load(str(tiny_engine_dir / f"{modality}.onnx")))
        with torch.no_grad():
            reference = tiny_model.encode(images, modality).numpy()
        for batch in (images[:1], images):  # the batch axis is dynamic
            got = embed(batch.numpy())
            # same float32 math through different kernels: rounding-level differences only
            np.testing.assert_allclose(got, reference[: len(batch)], atol=1e-5)


def test_engine_checkpoint_rebuilds_the_model(tiny_engine_dir, tiny_model):
    rebuilt = load_checkpoint(tiny_engine_dir / "checkpoint")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode(images, "sketch"), tiny_model.encode(images, "sketch"))



def test_the_gate_refuses_a_broken_graph_and_writes_nothing(tiny_model, traced, monkeypatch, tmp_path):
    from splip_engine.export import exporter

    def broken_export_tower(model, modality, opset=23, attention="contrib"):
        graph = traced(model, modality, opset, attention)
        proj = next(i for i in graph.graph.initializer if i.name.endswith("visual.proj"))
        weights = onnx.numpy_helper.to_array(proj)
        weights = weights + 0.01 * np.random.default_rng(0).standard_normal(weights.shape).astype(weights.dtype)
        proj.CopyFrom(onnx.numpy_helper.from_array(weights, proj.name))
        return graph

    monkeypatch.setattr(exporter, "export_tower", broken_export_tower)
    report = export_engines(tiny_model, tmp_path / "engines")
    assert not report and not report.written
    assert "sketch tower failed the fp32 parity gate: max_abs_diff" in report.errors[0]
    assert not (tmp_path / "engines").exists()


def test_unfused_attention_is_refused_unless_allowed(tiny_model, traced, monkeypatch, tmp_path):
    from splip_engine.export import exporter

    monkeypatch.setattr(exporter, "export_tower",
                        lambda model, modality, opset=23, attention="contrib": traced(model, modality, opset, "math"))
    refused = export_engines(tiny_model, tmp_path / "refused")
    assert not refused and not (tmp_path / "refused").exists()
    assert "sketch tower: 0 fused attention nodes, expected 4 (one per transformer layer); pass --allow-unfused" \
        in refused.errors[0]
    allowed = export_engines(tiny_model, tmp_path / "allowed", allow_unfused=True)
    assert allowed and allowed.fused_attention["sketch"]["allowed_unfused"]
    assert read_manifest(tmp_path / "allowed")["fused_attention"]["photo"]["count"] == 0


def test_fp16_engine_keeps_float32_io_and_passes_its_gate(tiny_model, cached_tracing, tmp_path):
    report = export_engines(tiny_model, tmp_path / "fp16", fp16=True, thresholds={"min_cosine": 0.9995})
    assert report, report.errors
    manifest = read_manifest(tmp_path / "fp16")
    assert manifest["precision"] == "fp16" and manifest["threshold_overrides"] == {"min_cosine": 0.9995}
    sketch = manifest["parity"]["sketch"]
    assert sketch["thresholds"] == {"min_cosine": 0.9995, "top10_agreement": 1.0}
    assert sketch["fp32_graph"]["passed"] and sketch["min_cosine"] >= 0.9995
    graph = onnx.load(str(tmp_path / "fp16" / "sketch.onnx"))
    assert {i.data_type for i in graph.graph.initializer} >= {onnx.TensorProto.FLOAT16}
    io_types = {v.type.tensor_type.elem_type for v in (*graph.graph.input, *graph.graph.output)}
    assert io_types == {onnx.TensorProto.FLOAT}
    embeddings = onnxruntime_embedder(graph)(np.zeros((3, 3, 32, 32), np.float32))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)  # normalised in float32


def test_int8_engine_is_kept_only_within_its_bound(tiny_model, cached_tracing, tmp_path):
    report = export_engines(tiny_model, tmp_path / "int8", int8=True)
    assert report, report.errors
    manifest = read_manifest(tmp_path / "int8")
    assert manifest["precision"] == "int8"
    assert manifest["parity"]["photo"]["top10_agreement"] >= 0.9
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "sketch.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    strict = export_engines(tiny_model, tmp_path / "strict", int8=True, thresholds={"max_abs_diff": 1e-7})
    assert not strict and "int8 parity gate: max_abs_diff" in strict.errors[0]


def test_bad_options_are_refused_before_any_work(tiny_model, tmp_path):
    with pytest.raises(SpLIPError, match="--fp16 and --int8 exclude each other"):
        export_engines(tiny_model, tmp_path, fp16=True, int8=True)
    with pytest.raises(SpLIPError, match=r"opset=12: supported opsets are 18\.\.23"):
        export_engines(tiny_model, tmp_path, opset=12)
    with pytest.raises(SpLIPError, match=r"format \['plan'\]: choose from"):
        export_engines(tiny_model, tmp_path, formats="plan")
    with pytest.raises(SpLIPError, match=r"is not a SpLIP checkpoint"):
        export_engines(tmp_path / "no-checkpoint", tmp_path)


def test_triton_repository_layout(tiny_engine_dir, tmp_path):
    from splip_engine.export.triton import write_triton_repo

    models = write_triton_repo(tmp_path / "repo", tiny_engine_dir, read_manifest(tiny_engine_dir), max_batch=32)
    assert sorted(m.name for m in models) == ["splip_photo_onnx", "splip_sketch_onnx"]
    config = (tmp_path / "repo" / "splip_sketch_onnx" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 32" in config
    assert "dims: [ 3, 32, 32 ]" in config and "dims: [ 64 ]" in config and "dynamic_batching" in config
    copied = tmp_path / "repo" / "splip_sketch_onnx" / "1" / "model.onnx"
    assert copied.read_bytes() == (tiny_engine_dir / "sketch.onnx").read_bytes()
    assert json.loads((tiny_engine_dir / "manifest.json").read_text())["files"]["sketch.onnx"]["bytes"] == \
        copied.stat().st_size
