"""ONNX -> TensorRT plans (TensorRT 10 Python API): a throughput plan (batch 1..max) and a batch-1
latency plan per tower, a reusable timing cache, engine inspection for fused MHA, and an
embedder that runs a plan on torch CUDA tensors for the parity gate.

TensorRT builds from the unfused (`attention="math"`) graph: its parser has no ORT contrib ops,
and its builder fuses MatMul-Softmax-MatMul into its own MHA kernels, which the inspector shows.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import numpy as np

from splip_engine.errors import SpLIPError

from .graph import INPUT_NAME, OUTPUT_NAME

logger = logging.getLogger(__name__)

TENSORRT_OPSET = 18
"""Opset of the graph handed to TensorRT's parser (the exporter's native opset, parsed by every TensorRT 10)."""
_MHA_LAYER = re.compile(r"mha|fmha|attention", re.IGNORECASE)


@dataclass(frozen=True)
class PlanProfile:
    """One optimization profile: batch sizes the plan accepts (min..max) and tunes for (opt)."""

    name: str
    min_batch: int
    opt_batch: int
    max_batch: int


def plan_profiles(max_batch: int) -> list[PlanProfile]:
    """The two plans per tower: throughput (1 / max / max) and latency (1 / 1 / 1)."""
    return [PlanProfile("throughput", 1, max_batch, max_batch), PlanProfile("latency", 1, 1, 1)]


def tensorrt_unavailable() -> str | None:
    """None when TensorRT and a CUDA GPU are usable, else the reason in one line."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'splip-engine[gpu]' on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible"
    return None


def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_plan(onnx_bytes: bytes, image_size: int, profile: PlanProfile, fp16: bool,
               timing_cache: bytes = b"") -> tuple[bytes, bytes]:
    """Build one serialized plan from ONNX bytes; returns (plan, updated timing cache)."""
    import tensorrt as trt

    log = _trt_logger()
    builder = trt.Builder(log)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always; 0 = not strongly typed
    parser = trt.OnnxParser(network, log)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SpLIPError(f"TensorRT could not parse the exported ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # fp32 plans must meet the fp32 parity bound
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):  # LayerNorm / L2 norm statistics overflow in fp16
            layer = network.get_layer(i)
            if layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.REDUCE):
                layer.precision = trt.float32
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names for the MHA check
    shape = (3, image_size, image_size)
    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT_NAME, (profile.min_batch, *shape), (profile.opt_batch, *shape),
                           (profile.max_batch, *shape))
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU is just ignored
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SpLIPError(f"TensorRT failed to build the {profile.name} plan (see the TensorRT log above)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _deserialize(plan: bytes):
    import tensorrt as trt

    engine = trt.Runtime(_trt_logger()).deserialize_cuda_engine(plan)
    if engine is None:
        raise SpLIPError("TensorRT could not load the plan it just built")
    return engine


def inspect_plan(plan: bytes) -> dict:
    """Layer count and the layers TensorRT fused into MHA kernels (by layer/tactic name)."""
    import tensorrt as trt

    inspector = _deserialize(plan).create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", [])
    names = [layer if isinstance(layer, str) else json.dumps(layer) for layer in layers]
    mha = [n for n in names if _MHA_LAYER.search(n)]
    return {"layers": len(names), "mha_layers": len(mha), "mha_fused": bool(mha)}


class PlanRunner:
    """Runs a plan on the GPU, an Embedder: pixels (n, 3, S, S) float32 -> embeddings (n, D)
    float32, with torch CUDA tensors as the I/O buffers. Holds the engine its context needs."""

    def __init__(self, plan: bytes):
        self.engine = _deserialize(plan)
        self.context = self.engine.create_execution_context()
        self.embedding_dim = int(self.engine.get_tensor_shape(OUTPUT_NAME)[-1])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        images = torch.from_numpy(np.ascontiguousarray(pixels)).cuda()  # (n, 3, S, S) float32
        out = torch.empty(len(images), self.embedding_dim, device="cuda", dtype=torch.float32)  # (n, D)
        self.context.set_input_shape(INPUT_NAME, tuple(images.shape))
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise SpLIPError("TensorRT execution failed")
        stream.synchronize()
        return out.cpu().numpy()


def tensorrt_version() -> str:
    import tensorrt as trt

    return trt.__version__
