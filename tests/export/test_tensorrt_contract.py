"""Contract of export/tensorrt.py with TensorRT 10.x and 11.x, against stand-in modules per API
generation (tests/export/trt_standins.py): which calls the build makes, from which ONNX, with
which cache, and how failures read. It checks the calls, not that TensorRT works."""
from __future__ import annotations

import sys

import onnx
import pytest

from splip_engine.errors import SpLIPError
from splip_engine.export import tensorrt as trt_export
from splip_engine.export.tensorrt_inspect import classify_fusion

from .trt_standins import calls_named, make_tensorrt

THROUGHPUT = trt_export.PlanProfile("throughput", 1, 8, 8)
GENERATIONS = {  # version -> (typing chosen by auto, create_network flags)
    "10.8.0": ("weak", 0),  # before 10.12: the weakly typed FP16 flag path
    "10.13.3": ("strong", 1 << 1),  # 10.x STRONGLY_TYPED is bit 1 (EXPLICIT_BATCH is bit 0)
    "11.4.0": ("strong", 0),  # 11: every network strongly typed; the flag is ignored, pass 0
}


def _install(monkeypatch, version: str, **kwargs):
    trt = make_tensorrt(version, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture(scope="module")
def math_graph(traced, tiny_model):
    """The fp32 unfused sketch tower TensorRT builds from."""
    return traced(tiny_model, "sketch", 18, "math")


def _float16_initializers(onnx_bytes: bytes) -> int:
    graph = onnx.load_from_string(onnx_bytes)
    return sum(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)


@pytest.mark.parametrize("version", sorted(GENERATIONS))
def test_fp16_plan_build_makes_each_generations_calls(version, math_graph, monkeypatch):
    trt = _install(monkeypatch, version)
    typing, network_flags = GENERATIONS[version]
    assert trt_export.plan_typing(version) == typing
    onnx_bytes = trt_export.plan_onnx(math_graph, fp16=True, typing=typing).SerializeToString()
    plan, cache = trt_export.build_plan(onnx_bytes, 32, THROUGHPUT, fp16=True, typing=typing)
    assert plan == b"PLAN" and cache.startswith(b"NVIDIA H200|")
    assert calls_named(trt, "create_network") == [network_flags]
    assert calls_named(trt, "clear_flag") == ["TF32"]
    assert calls_named(trt, "set_timing_cache") == [False]  # ignore_mismatch=False
    assert calls_named(trt, "build_serialized_network") == ["DETAILED"]  # types + tactics for the fusion check
    assert calls_named(trt, "profile.set_shape") == [("pixels", (1, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32))]
    if typing == "strong":  # the fp16 ONNX, no precision flags, no per-layer precisions
        assert _float16_initializers(trt.parsed[0]) > 0
        assert calls_named(trt, "set_flag") == [] and calls_named(trt, "layer.precision") == []
    else:  # 10.x weak typing: the fp32 ONNX with the FP16 flag and float32 normalisation layers
        assert _float16_initializers(trt.parsed[0]) == 0
        assert calls_named(trt, "set_flag") == ["FP16", "PREFER_PRECISION_CONSTRAINTS"]
        assert calls_named(trt, "layer.precision") == [("NORMALIZATION", "float32"), ("REDUCE", "float32")]


def test_the_strongly_typed_fp16_graph_keeps_softmax_in_fp16_and_layernorm_in_fp32(math_graph):
    graph = trt_export.plan_onnx(math_graph, fp16=True, typing="strong")
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.graph.value_info, *graph.graph.input)}
    by_op = {}
    for node in graph.graph.node:
        by_op.setdefault(node.op_type, set()).add(types.get(node.input[0]))
    assert by_op["Softmax"] == {onnx.TensorProto.FLOAT16}  # fusable into TensorRT's MHA kernels
    assert by_op["LayerNormalization"] == {onnx.TensorProto.FLOAT}  # statistics overflow in fp16


def test_the_fp32_plan_is_built_from_the_fp32_graph_on_every_generation(math_graph, monkeypatch):
    for version, (typing, _) in GENERATIONS.items():
        trt = _install(monkeypatch, version)
        onnx_bytes = trt_export.plan_onnx(math_graph, fp16=False, typing=typing).SerializeToString()
        trt_export.build_plan(onnx_bytes, 32, THROUGHPUT, fp16=False, typing=typing)
        assert _float16_initializers(trt.parsed[0]) == 0 and calls_named(trt, "set_flag") == []


def test_typing_is_chosen_by_version_and_weak_typing_is_refused_on_11():
    assert trt_export.plan_typing("10.13.3", "weak") == "weak"  # still possible on 10.x
    assert trt_export.plan_typing("10.8.0", "strong") == "strong"
    with pytest.raises(SpLIPError, match=r"TensorRT 11\.4\.0 builds strongly typed networks only"):
        trt_export.plan_typing("11.4.0", "weak")
    with pytest.raises(SpLIPError, match="typing='loose'"):
        trt_export.plan_typing("10.13.3", "loose")


@pytest.mark.parametrize("version", ["9.3.0", "12.0.0"])
def test_an_unsupported_tensorrt_is_refused_naming_its_version(version, monkeypatch):
    _install(monkeypatch, version)
    with pytest.raises(SpLIPError, match=rf"TensorRT {version} is not supported.*tensorrt>=10,<12"):
        trt_export.import_tensorrt()
    assert f"TensorRT {version} is not supported" in trt_export.tensorrt_unavailable()


@pytest.mark.parametrize(("fail_at", "message"), [
    ("create_network", r"TensorRT 11\.4\.0 failed while creating the builder and network: TypeError: "),
    ("parse", r"TensorRT 11\.4\.0 failed while parsing the ONNX graph: In node 3 \(Softmax\)"),
    ("build", r"TensorRT 11\.4\.0 failed while building the throughput plan: "),
])
def test_every_failure_names_the_tensorrt_version_and_the_step(fail_at, message, monkeypatch):
    _install(monkeypatch, "11.4.0", fail_at=fail_at)
    with pytest.raises(SpLIPError, match=message):
        trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="strong")


def test_a_weak_build_on_11_fails_as_a_named_step_not_an_attribute_error(monkeypatch):
    _install(monkeypatch, "11.4.0")
    with pytest.raises(SpLIPError, match=r"TensorRT 11\.4\.0 failed while configuring .*AttributeError: FP16"):
        trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="weak")


def test_the_timing_cache_is_reused_for_the_same_gpu_and_version_only(monkeypatch, tmp_path):
    name = trt_export.timing_cache_name("NVIDIA H200", "10.13.3")
    assert name == "timing.NVIDIA-H200-trt10.13.3.cache"
    assert len({name, trt_export.timing_cache_name("NVIDIA H100 80GB HBM3", "10.13.3"),
                trt_export.timing_cache_name("NVIDIA H200", "11.4.0")}) == 3
    trt = _install(monkeypatch, "10.13.3")
    _, first = trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="strong")
    _, second = trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="strong", timing_cache=first)
    assert calls_named(trt, "create_timing_cache") == [b"", first]  # the second build starts from the first's
    assert second.count(b"entry;") == 2
    (tmp_path / name).write_bytes(first)
    key = {"gpu": "NVIDIA H200", "tensorrt": "10.13.3", "file": name}
    assert trt_export.load_timing_cache(tmp_path, key) == first
    other = {"gpu": "NVIDIA H200", "tensorrt": "11.4.0", "file": trt_export.timing_cache_name("NVIDIA H200", "11.4.0")}
    assert trt_export.load_timing_cache(tmp_path, other) == b""  # never read across versions


def test_a_timing_cache_from_another_device_is_refused(monkeypatch):
    _install(monkeypatch, "10.13.3", gpu="NVIDIA H100")
    _, foreign = trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="strong")
    _install(monkeypatch, "10.13.3", gpu="NVIDIA H200")
    with pytest.raises(SpLIPError, match=r"TensorRT 10\.13\.3 refused the timing cache .*another GPU"):
        trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="strong", timing_cache=foreign)


def test_a_timing_cache_tensorrt_cannot_read_is_refused_not_a_type_error(monkeypatch):
    _install(monkeypatch, "10.8.0")
    _, old = trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="weak")
    trt = _install(monkeypatch, "10.13.3")  # create_timing_cache(old) returns None
    with pytest.raises(SpLIPError, match=r"TensorRT 10\.13\.3 refused the timing cache \(unreadable\).*delete it"):
        trt_export.build_plan(b"onnx", 32, THROUGHPUT, fp16=True, typing="strong", timing_cache=old)
    assert calls_named(trt, "set_timing_cache") == []  # None was never handed on


@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_the_runner_refuses_a_batch_outside_the_profile_instead_of_running_the_old_shape(version, monkeypatch):
    import torch

    trt = _install(monkeypatch, version, max_batch=8)
    runner = trt_export.PlanRunner(b"PLAN")
    assert runner.embedding_dim == 64
    runner.bind(torch.zeros(8, 3, 32, 32), torch.zeros(8, 64))
    assert calls_named(trt, "set_tensor_address") == ["pixels", "embeddings"]
    with pytest.raises(SpLIPError, match=rf"TensorRT {version} refused input shape \(9, 3, 32, 32\): the plan's "
                                         r"profile takes \(1, 3, 32, 32\) to \(8, 3, 32, 32\)"):
        runner.bind(torch.zeros(9, 3, 32, 32), torch.zeros(9, 64))
    assert calls_named(trt, "set_tensor_address") == ["pixels", "embeddings"]  # nothing bound for the refused batch


def test_the_runner_refuses_a_plan_whose_io_is_not_float32(monkeypatch):
    _install(monkeypatch, "10.13.3", io_dtypes=("float32", "float16"))
    with pytest.raises(SpLIPError, match=r"the plan's 'embeddings' is float16, not float32; re-export"):
        trt_export.PlanRunner(b"PLAN")


# inspector layers as TensorRT reports them with ProfilingVerbosity.DETAILED
UNFUSED = [
    {"Name": "/visual/transformer/resblocks.0/attention/MatMul", "LayerType": "CaskGemmMatrixMultiply",
     "TacticName": "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64"},
    {"Name": "/visual/transformer/resblocks.0/attention/Softmax", "LayerType": "CaskSoftMax", "ParameterType": "SoftMax",
     "TacticName": "0x0000000000000001"},
]
FUSED = [
    {"Name": "_gemm_mha_v2_myl3_6", "LayerType": "kgen", "TacticName": "_gemm_mha_v2_sm90_fp16"},
    {"Name": "/visual/ln_post/LayerNormalization", "LayerType": "CaskNormalization", "TacticName": "0x01"},
]


@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_fusion_is_read_from_layer_types_and_tactics_not_names(version, monkeypatch):
    _install(monkeypatch, version, layers=UNFUSED)  # names say "attention", types say unfused
    unfused = trt_export.inspect_plan(b"PLAN")
    assert unfused["mha_fused"] is False and unfused["softmax_layers"] == 1 and unfused["mha_layers"] == 0
    _install(monkeypatch, version, layers=FUSED)
    fused = trt_export.inspect_plan(b"PLAN")
    assert fused["mha_fused"] is True and fused["mha_layers"] == 1
    assert fused["evidence"] == ["kgen: _gemm_mha_v2_sm90_fp16"]


def test_fusion_is_unknown_when_the_inspector_cannot_tell():
    assert classify_fusion({"Layers": ["conv", "matmul"]})["mha_fused"] == "unknown"  # names only
    opaque = {"Layers": [{"Name": "{ForeignNode[/visual/conv1...]}", "LayerType": "Myelin", "TacticName": ""}]}
    assert classify_fusion(opaque)["mha_fused"] == "unknown"
    assert classify_fusion({})["mha_fused"] == "unknown"


def test_a_plan_from_another_version_is_a_clear_error(monkeypatch):
    _install(monkeypatch, "11.4.0")
    with pytest.raises(SpLIPError, match=r"TensorRT 11\.4\.0 could not load the plan: .*re-export"):
        trt_export.inspect_plan(b"another version's plan")
