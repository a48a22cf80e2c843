"""Whether TensorRT fused attention, read from the engine inspector's JSON (TensorRT 10 and 11).

With `ProfilingVerbosity.DETAILED` every entry of the JSON's "Layers" is an object with "Name",
"LayerType" (TensorRT's own kernel family, e.g. "CaskConvolution", "SoftMax", "Myelin"), an
optional "ParameterType", and "TacticName" (the kernel chosen, e.g. `_gemm_mha_v2_...` or
`fmha_v2_...` for fused attention). Names are not evidence: TensorRT derives them from the ONNX
node names, which for our unfused graph are words like "attention". So:
- fused: a layer whose type or tactic names an attention kernel (mha / fmha / flash attention);
- unfused: no such layer, and SoftMax layers of their own remain;
- "unknown": neither (names-only JSON, or the softmax is hidden inside an opaque Myelin graph).
The JSON's other top-level keys changed in TensorRT 11 ("Bindings" became "I/O Tensors",
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-IEngineInspector.html);
"Layers" did not, and this reads only it.
"""
from __future__ import annotations

import re
from typing import Any

_ATTENTION_KERNEL = re.compile(r"mha|fmha|flash_?att|attention", re.IGNORECASE)
_SOFTMAX = re.compile(r"soft_?max", re.IGNORECASE)


def classify_fusion(info: dict[str, Any]) -> dict[str, Any]:
    """Inspector JSON (parsed) -> {"layers", "mha_layers", "softmax_layers", "mha_fused": True |
    False | "unknown", "evidence": the type/tactic strings that decided it}."""
    layers = info.get("Layers")
    if not isinstance(layers, list):
        return {"layers": 0, "mha_layers": 0, "softmax_layers": 0, "mha_fused": "unknown",
                "evidence": ["no Layers list in the inspector output"]}
    described = [layer for layer in layers if isinstance(layer, dict)]
    if len(described) < len(layers):  # LAYER_NAMES_ONLY verbosity: strings, no types
        return {"layers": len(layers), "mha_layers": 0, "softmax_layers": 0, "mha_fused": "unknown",
                "evidence": ["the inspector gave layer names only (build with ProfilingVerbosity.DETAILED)"]}
    kinds = [(_layer_type(layer), str(layer.get("TacticName") or "")) for layer in described]
    fused = [f"{kind}: {tactic}" for kind, tactic in kinds
             if _ATTENTION_KERNEL.search(kind) or _ATTENTION_KERNEL.search(tactic)]
    softmax = [kind for kind, _ in kinds if _SOFTMAX.search(kind)]
    if fused:
        verdict, evidence = True, fused
    elif softmax:
        verdict, evidence = False, [f"{len(softmax)} separate SoftMax layers, no attention kernel"]
    else:
        verdict, evidence = "unknown", ["no attention kernel and no separate SoftMax layer among the layer types"]
    return {"layers": len(layers), "mha_layers": len(fused), "softmax_layers": len(softmax), "mha_fused": verdict,
            "evidence": evidence[:8]}


def _layer_type(layer: dict[str, Any]) -> str:
    """The layer's kind: "ParameterType" where TensorRT gives one (e.g. "Convolution" for a
    "CaskConvolution" layer), else "LayerType"."""
    return str(layer.get("ParameterType") or layer.get("LayerType") or "")
