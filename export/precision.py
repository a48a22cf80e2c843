"""Lower an fp32 tower graph to fp16 (GPU engines) or int8 (CPU engines) with ONNX Runtime's tools.

fp16 keeps the graph's input and output float32 and runs in float32 what overflows or loses
too much in half precision: LayerNormalization (variance of wide activations), Softmax, and the
final L2 normalisation (ReduceL2 and everything after it). int8 is ORT dynamic quantization of
the weight MatMuls / Gemms (int8 weights, per-row dynamic uint8 activations; no calibration set).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from splip_engine.errors import SpLIPError

from splip_engine.optional import import_onnxruntime

PRECISIONS = ("fp32", "fp16", "int8")
FP16_BLOCKED_OPS = ("LayerNormalization", "Softmax")
"""Ops run in float32 in fp16 engines for ONNX Runtime."""
TENSORRT_FP16_BLOCKED_OPS = ("LayerNormalization",)
"""The same for TensorRT's strongly typed fp16 plans: Softmax stays in fp16 there, so that the
builder can fuse MatMul-Softmax-MatMul into its MHA kernels (which accumulate in float32); a
float32 Softmax island between two fp16 MatMuls blocks that fusion."""
INT8_OP_TYPES = ["MatMul", "Gemm"]


def _normalisation_nodes(graph) -> list[str]:
    """Names of the final L2 normalisation's nodes: ReduceL2 and everything downstream of it."""
    downstream: set[str] = set()
    names = []
    for node in graph.graph.node:
        if node.op_type == "ReduceL2" or any(i in downstream for i in node.input):
            downstream.update(node.output)
            names.append(node.name)
    return names


def to_fp16(graph, blocked_ops: tuple[str, ...] = FP16_BLOCKED_OPS):
    """fp16 copy of an fp32 onnx.ModelProto; float32 graph input/output kept, `blocked_ops` and
    the final normalisation run in float32."""
    import_onnxruntime()
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    blocked_nodes = _normalisation_nodes(graph)
    half = convert_float_to_float16(
        graph, keep_io_types=True, op_block_list=list(blocked_ops), node_block_list=blocked_nodes,
    )
    fp32_values = {out for node in half.graph.node if node.name in blocked_nodes or node.op_type in blocked_ops
                   for out in node.output}
    _drop_round_trips(half, fp32_values)
    OnnxModel(half).topological_sort()  # the converter appends its Casts at the end
    return _refresh_value_info(half)


def _refresh_value_info(graph):
    """Drop the converter's value_info and infer it again. It leaves float32 entries for
    initializers it turned into float16, which strict consumers (onnx.checker full_check,
    TensorRT's parser) reject: "Inferred elem type differs from existing elem type"."""
    import onnx

    del graph.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(graph, strict_mode=True)


def _drop_round_trips(graph, fp32_values: set[str]) -> None:
    """Remove Cast(fp16) -> Cast(fp32) pairs on values computed in float32 (the converter inserts
    them between float32 nodes and before the float32 output): pure rounding, no conversion."""
    from onnx import TensorProto

    nodes = list(graph.graph.node)
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.graph.output}
    rename: dict[str, str] = {}
    removed = set()
    for node in nodes:
        to_half = node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT16
        if not to_half or node.input[0] not in fp32_values or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "Cast" or u.attribute[0].i != TensorProto.FLOAT for u in users):
            continue
        removed.update(id(n) for n in (node, *users))
        for user in users:
            rename[user.output[0]] = node.input[0]
    for final in outputs & set(rename):  # the graph output keeps its name: rename its producer instead
        source = rename.pop(final)
        rename = {k: (final if v == source else v) for k, v in rename.items()}
        for node in nodes:
            node.output[:] = [final if o == source else o for o in node.output]
            node.input[:] = [final if i == source else i for i in node.input]
    kept = [n for n in nodes if id(n) not in removed]
    for node in kept:
        node.input[:] = [rename.get(i, i) for i in node.input]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)


def to_int8(graph):
    """Dynamically quantized (int8 weights) copy of an fp32 onnx.ModelProto."""
    import_onnxruntime()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="splip-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(graph, out, op_types_to_quantize=INT8_OP_TYPES, per_channel=True,
                         weight_type=QuantType.QInt8)
        return onnx.load(str(out))


def convert_precision(graph, precision: str, blocked_ops: tuple[str, ...] = FP16_BLOCKED_OPS):
    """fp32 graph -> graph in `precision` (one of PRECISIONS); `blocked_ops`: see to_fp16."""
    if precision == "fp32":
        return graph
    if precision == "fp16":
        return to_fp16(graph, blocked_ops)
    if precision == "int8":
        return to_int8(graph)
    raise SpLIPError(f"precision={precision!r}: choose one of {PRECISIONS}")
