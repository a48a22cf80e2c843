"""PyTorch backend: the SpLIP model itself (from the engine dir's checkpoint/ or a checkpoint dir)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder


class TorchEncoder(Encoder):
    """Eager PyTorch; fp16 autocast on CUDA when the manifest's precision is fp16."""

    backend = "torch"

    def __init__(self, model, manifest: dict[str, Any], device: str = "cpu", batch_size: int = 32):
        super().__init__(manifest, batch_size=batch_size)
        theirs = {"embedding_dim": int(model.embed_dim), "image_size": int(model.image_size)}
        ours = {"embedding_dim": self.embedding_dim, "image_size": self.image_size}
        if theirs != ours:
            diff = ", ".join(f"{k} {ours[k]} (manifest) != {theirs[k]} (model)" for k in ours if ours[k] != theirs[k])
            raise SpLIPError(f"the manifest does not match the model it describes: {diff}; re-export the engine")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.autocast = self.device.type == "cuda" and manifest.get("precision") == "fp16"

    @torch.inference_mode()
    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        batch = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            embeddings = self.model.encode(batch, modality)
        return embeddings.float().cpu().numpy()


def model_manifest(model) -> dict[str, Any]:
    """The runtime part of a manifest for a bare SpLIP model (a checkpoint dir with no export)."""
    from splip_engine.data.transforms import PREPROCESS_MODES, PreprocessSpec

    spec = PreprocessSpec.for_model(model)
    return {
        "format_version": 1,
        "model_config": model.cfg.to_dict(),
        "image_size": spec.image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "preprocess": dict(PREPROCESS_MODES),
        "embedding_dim": model.embed_dim,
        "precision": "fp32",
        "engine_hash": None,
    }
