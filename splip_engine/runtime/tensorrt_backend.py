"""TensorRT backend: the engine dir's plans (`<modality>.plan` for throughput, `<modality>.b1.plan`
for batch-1 latency) run by export's PlanRunner on CUDA."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder


class TensorRTEncoder(Encoder):
    """One PlanRunner per plan; a batch of one goes to the latency plan when there is one."""

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, engine_dir: Path, manifest: dict[str, Any], batch_size: int = 32):
        import torch

        from splip_engine.export.tensorrt import PlanRunner, tensorrt_unavailable, tensorrt_version

        reason = tensorrt_unavailable()
        if reason or not torch.cuda.is_available():
            raise SpLIPError(f"the tensorrt backend is unavailable ({reason or 'no CUDA GPU'}): "
                             "pip install 'splip-engine[gpu]' on an NVIDIA GPU machine, or use backend='onnxruntime'")
        info = manifest.get("tensorrt") or {}
        if not info.get("plans"):
            raise SpLIPError(f"{engine_dir} has no TensorRT plans: export with `splip-engine export --format tensorrt`")
        built_with, installed = info.get("version"), tensorrt_version()
        if built_with != installed:  # plans are specific to the TensorRT version that built them
            raise SpLIPError(f"{engine_dir}'s TensorRT plans were built with TensorRT {built_with}, this machine has "
                             f"{installed}: re-export them here (`splip-engine export --format tensorrt`)")
        super().__init__(manifest, batch_size=min(batch_size, int(info.get("max_batch", batch_size))))
        self.runners = {m: PlanRunner((engine_dir / name).read_bytes()) for m, name in info["plans"].items()}
        self.latency_runners = {m: PlanRunner((engine_dir / name).read_bytes())
                                for m, name in info.get("latency_plans", {}).items()}

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        return self._runner(modality, len(pixels))(pixels)

    def embed_tensor(self, pixels, modality: str):
        """(N, 3, S, S) CUDA tensor -> (N, D) float32 CUDA tensor through the plans, no host copy."""
        import torch

        self._check_modality(modality)
        if not pixels.is_cuda:
            return super().embed_tensor(pixels, modality)
        chunks = [pixels[start:start + self.batch_size] for start in range(0, len(pixels), self.batch_size)]
        outputs = [self._runner(modality, len(chunk)).run(chunk) for chunk in chunks]
        return torch.cat(outputs) if outputs else pixels.new_empty((0, self.embedding_dim), dtype=torch.float32)

    def _runner(self, modality: str, rows: int):
        return (self.latency_runners.get(modality) if rows == 1 else None) or self.runners[modality]

    def close(self) -> None:
        self.runners.clear()
        self.latency_runners.clear()
