"""torch -> ONNX for one SpLIP tower: pixels in, L2-normalised embeddings out, attention fused.

Attention is routed through `ATTENTION_IMPLS` (splip_engine/model/attention.py) by registering
two export-time entries there:
- `export_contrib`: an opaque custom op that the exporter translates into one ORT
  `com.microsoft::MultiHeadAttention` node per layer (the ONNX Runtime engines);
- `export_math`: attention spelled out as MatMul / Softmax / MatMul, for TensorRT, whose builder
  fuses that pattern into its own MHA kernels (its ONNX parser has no contrib ops).
`attention="onnx"` keeps torch's SDPA, which the opset-23 exporter turns into ONNX `Attention`.
Measured side by side (ViT-B-32 SpLIP sketch tower, ORT 1.32, 2 threads, quiet 2-core AMD EPYC,
interleaved medians, `benchmarks/bench_encoders.py --variants`, 2026-12-01): contrib 35.7 / 412.5
ms at batch 1 / 16, ONNX `Attention` 35.3 / 411.0 ms, unfused 35.9 / 411.1 ms: equal within noise
(at 56 tokens QK^T and PV are ~1% of a layer's MACs; the QKV / MLP GEMMs bound the tower). An earlier
run on a contended machine favoured contrib (218 vs 276 / 246 ms). We keep contrib: fused, as
fast as any, exportable at opsets 18-23, and the op ORT's CUDA provider has fused kernels for.
ORT's transpose optimiser removes the layout transposes around the contrib node.

Input-independent tensors are baked: V_tg (and, for a model without B_t, every V_ms,l) is
computed once by `EncoderGraph` and traced as a constant; the rest (the template / class-name word embeddings, pooling weights, masks) by
constant folding with no input-size limit, so no node that does not depend on `pixels`
survives and the text tower's token-embedding table (25M floats for ViT-B) drops out.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from splip_engine.model import SpLIP
from splip_engine.model.attention import ATTENTION_IMPLS

logger = logging.getLogger(__name__)

INPUT_NAME = "pixels"
OUTPUT_NAME = "embeddings"
BATCH_AXIS = "batch"
ATTENTION_MODES = ("contrib", "onnx", "math")
"""`contrib`: ORT MultiHeadAttention (default, fastest fused on CPU); `onnx`: ONNX Attention
(opset >= 23); `math`: unfused MatMul/Softmax (TensorRT input, and the unfused baseline)."""
FUSED_OP_TYPES = ("MultiHeadAttention", "Attention")
MIN_OPSET, MAX_OPSET = 18, 23
_FOLD_OUTPUT_LIMIT = 16 * 1024 * 1024
"""Largest tensor constant folding may create (elements): far above the baked prompt tensors."""
_KERNELS = {"contrib": "export_contrib", "onnx": "torch", "math": "export_math"}


@torch.library.custom_op("splip_export::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, H, N, Dh) q, k, v -> (B, H, N, Dh); opaque to the exporter, translated to one node."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


@_attention_op.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return torch.empty_like(q)


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) [+ causal mask]) v with plain ops (B, H, N, Dh)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, N, N)
    if causal:
        n = q.shape[-2]
        future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)  # (N, N)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1) @ v


ATTENTION_IMPLS.setdefault("export_contrib", lambda q, k, v, causal: _attention_op(q, k, v, causal))
ATTENTION_IMPLS.setdefault("export_math", _math_attention)


def _mha_translation():
    """onnxscript translation of `splip_export::attention` into com.microsoft MultiHeadAttention."""
    import onnxscript
    from onnx.defs import OpSchema
    from onnxscript import opset18 as op

    param = OpSchema.FormalParameter
    schema = OpSchema(  # ORT's contrib schemas are not in onnx.defs; declare the part we use
        "MultiHeadAttention", "com.microsoft", 1,
        inputs=[param("query", "T"), param("key", "T"), param("value", "T")],
        outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, ""),
                    OpSchema.Attribute("unidirectional", OpSchema.AttrType.INT, "")],
    )
    mha = onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), "MultiHeadAttention", schema)

    def attention(q, k, v, causal: bool):
        heads, head_dim = q.shape[1], q.shape[3]

        def to_bsd(t):  # (B, H, N, Dh) -> (B, N, H*Dh)
            return op.Reshape(op.Transpose(t, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))

        out = mha(to_bsd(q), to_bsd(k), to_bsd(v), num_heads=heads, unidirectional=int(causal))  # (B, N, D)
        return op.Transpose(op.Reshape(out, op.Constant(value_ints=[0, 0, heads, head_dim])), perm=[0, 2, 1, 3])

    return attention


class EncoderGraph(nn.Module):
    """What export traces for one tower: pixels (N, 3, S, S) float32 -> embeddings (N, D) float32,
    with the image-independent prompts (`SpLIP.constant_prompts`: V_tg, and V_ms,l of a model
    without B_t) computed once here and held as buffers (graph constants)."""

    def __init__(self, model: SpLIP, modality: str):
        super().__init__()
        self.model = model
        self.modality = modality
        with torch.no_grad():
            constant = model.constant_prompts(modality)
        template = constant.get("template_prompts")
        layers = constant.get("layer_prompts")
        self.register_buffer("template_prompts", None if template is None else template.detach().clone())  # (P_tg, Dv)
        self.register_buffer("layer_prompts", None if layers is None else torch.stack(layers).detach())  # (depth, 1, n, Dv)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        baked = {}
        if self.template_prompts is not None:
            baked["template_prompts"] = self.template_prompts
        if self.layer_prompts is not None:
            baked["layer_prompts"] = list(self.layer_prompts.unbind(0))
        with _baked_prompts(self.model, baked):
            return self.model.encode(pixels, self.modality)  # (N, D), L2-normalised


@contextlib.contextmanager
def _baked_prompts(model: SpLIP, baked: dict) -> Iterator[None]:
    """Let each `model.<name>(...)` of `baked` return its baked value while tracing (an instance
    attribute shadows the method; removing it restores the method)."""
    for name, value in baked.items():
        setattr(model, name, lambda *args, value=value: value)
    try:
        yield
    finally:
        for name in baked:
            delattr(model, name)


@contextlib.contextmanager
def using_kernels(model: SpLIP, kernels: str) -> Iterator[None]:
    """Run `model`'s attention through ATTENTION_IMPLS[kernels] inside the block, then restore."""
    previous = model.kernels
    model.set_kernels(kernels)
    try:
        yield
    finally:
        model.set_kernels(previous)


def expected_attention_count(model: SpLIP) -> int:
    """Attention calls in one tower's graph: every vision layer, + every prompted text layer when
    the text pass depends on the image (B_t and B_vt built; otherwise it is baked or absent)."""
    vision_layers = len(model.clip.visual.transformer.resblocks)
    return vision_layers + (model.prompt_depth if model.text_prompter is not None else 0)


def count_fused_attention(graph) -> tuple[int, str]:
    """Number of fused attention nodes in an onnx.ModelProto, and their op type(s)."""
    found = [n.op_type for n in graph.graph.node if n.op_type in FUSED_OP_TYPES]
    return len(found), "+".join(sorted(set(found))) or "none"


def export_tower(model: SpLIP, modality: str, opset: int = 23, attention: str = "contrib"):
    """Trace `model.encode(., modality)` to an onnx.ModelProto with a dynamic batch axis, fused
    attention per `attention` (see ATTENTION_MODES) and input-independent tensors baked."""
    import onnxscript
    from onnxscript import ir

    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention={attention!r}: choose one of {ATTENTION_MODES}")
    if attention == "onnx" and opset < 23:
        raise ValueError(f"attention='onnx' needs opset >= 23 (the ONNX Attention op), got {opset}")
    graph = EncoderGraph(model, modality).eval()
    pixels = torch.zeros(2, 3, model.image_size, model.image_size)  # batch 2: keeps the axis symbolic
    translations = {torch.ops.splip_export.attention.default: _mha_translation()}
    with using_kernels(model, _KERNELS[attention]), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph, (pixels,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, optimize=False, verbose=False,
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim(BATCH_AXIS, min=1)}},
            custom_translation_table=translations,
        )
    onnxscript.optimizer.optimize(program.model, input_size_limit=2**62, output_size_limit=_FOLD_OUTPUT_LIMIT)
    proto = ir.serde.serialize_model(program.model)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS
    proto.producer_name = "splip-engine"
    logger.info("exported the %s tower: %d nodes, attention=%s", modality, len(proto.graph.node), attention)
    return proto
