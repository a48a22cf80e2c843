"""ONNX Runtime backend: one InferenceSession per modality graph of the engine dir."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise SpLIPError("ONNX Runtime is not installed: pip install 'splip-engine[cpu]' (or [gpu])") from e
    return onnxruntime


class OrtEncoder(Encoder):
    """ONNX Runtime on CPU, or CUDA (CUDAExecutionProvider) when `device="cuda"`."""

    backend = "onnxruntime"

    def __init__(self, engine_dir: Path, manifest: dict[str, Any], device: str = "cpu",
                 batch_size: int = 32, threads: int = 0):
        super().__init__(manifest, batch_size=batch_size)
        ort = import_onnxruntime()
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise SpLIPError("device='cuda' needs onnxruntime-gpu with CUDA: pip install 'splip-engine[gpu]'")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {
            modality: ort.InferenceSession(str(engine_dir / f"{modality}.onnx"), options, providers=providers)
            for modality in ("sketch", "photo")
        }
        self.input_name = manifest.get("input", {}).get("name", "pixels")

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        return self.sessions[modality].run(None, {self.input_name: pixels})[0]

    def close(self) -> None:
        self.sessions.clear()
