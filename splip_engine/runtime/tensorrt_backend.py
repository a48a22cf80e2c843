"""TensorRT backend: deserialises the engine dir's `<modality>.plan` files and runs them on CUDA."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise SpLIPError("TensorRT is not installed: pip install 'splip-engine[gpu]' (needs an NVIDIA GPU)") from e
    return tensorrt


class TensorRTEncoder(Encoder):
    """TensorRT 10 execution contexts (one per modality) with torch CUDA tensors as I/O buffers."""

    backend = "tensorrt"

    def __init__(self, engine_dir: Path, manifest: dict[str, Any], batch_size: int = 32):
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise SpLIPError("the tensorrt backend needs a CUDA GPU; use backend='onnxruntime' on CPU")
        plans = manifest.get("tensorrt", {}).get("plans", {})
        max_batch = int(manifest.get("tensorrt", {}).get("max_batch", batch_size))
        super().__init__(manifest, batch_size=min(batch_size, max_batch))
        self._torch = torch
        self.stream = torch.cuda.Stream()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines, self.contexts = {}, {}
        for modality in ("sketch", "photo"):
            plan = engine_dir / plans.get(modality, f"{modality}.plan")
            if not plan.is_file():
                raise SpLIPError(f"{plan} is missing: export with `splip-engine export --format tensorrt`")
            engine = runtime.deserialize_cuda_engine(plan.read_bytes())
            if engine is None:
                raise SpLIPError(f"{plan} could not be deserialised (built by another TensorRT version or GPU?)")
            self.engines[modality] = engine
            self.contexts[modality] = engine.create_execution_context()
        self.input_name = manifest.get("input", {}).get("name", "pixels")
        self.output_name = manifest.get("output", {}).get("name", "embeddings")

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        torch = self._torch
        context = self.contexts[modality]
        batch = torch.from_numpy(pixels).pin_memory().to("cuda", non_blocking=True)
        out = torch.empty((len(pixels), self.embedding_dim), dtype=torch.float32, device="cuda")
        context.set_input_shape(self.input_name, tuple(batch.shape))
        context.set_tensor_address(self.input_name, batch.data_ptr())
        context.set_tensor_address(self.output_name, out.data_ptr())
        with torch.cuda.stream(self.stream):
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise SpLIPError(f"TensorRT execution failed for the {modality} engine")
        self.stream.synchronize()
        return out.cpu().numpy()

    def close(self) -> None:
        self.contexts.clear()
        self.engines.clear()
