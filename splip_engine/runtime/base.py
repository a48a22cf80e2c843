"""Encoder: the one base class of every runtime backend (torch, ONNX Runtime, TensorRT).

The public `embed()` checks and preprocesses its inputs exactly as training did (the manifest's
preprocessing), batches them and calls the backend's `_embed_impl()` on float32 pixels.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError

logger = logging.getLogger(__name__)


class Encoder:
    """Embeds sketches / photos with one engine. Subclasses implement `_embed_impl`.

    `fixed_batch`: when set (static-shape engines), every call to `_embed_impl` gets exactly
    that many rows; the last batch is padded and the padding dropped.
    """

    backend = "base"

    def __init__(self, manifest: dict[str, Any], batch_size: int = 32, fixed_batch: int | None = None):
        from splip_engine.data.transforms import PreprocessSpec

        self.manifest = manifest
        self.embedding_dim = int(manifest["embedding_dim"])
        self.image_size = int(manifest["image_size"])
        self.spec = PreprocessSpec(image_size=self.image_size, mean=tuple(manifest["mean"]), std=tuple(manifest["std"]))
        self.batch_size = fixed_batch or batch_size
        self.fixed_batch = fixed_batch

    # ------------------------------------------------------------------ API
    def embed(self, images: Sequence[Any], modality: str) -> np.ndarray:
        """Images (paths, PIL images or uint8 HxWx3 arrays) -> (N, D) float32, L2-normalised.

        A bad image raises ImageDecodeError naming its position; N = 0 gives a (0, D) array.
        """
        from splip_engine.data.transforms import preprocess_batch

        self._check_modality(modality)
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            images = list(images) if not isinstance(images, (str, bytes)) else [images]
        out = np.empty((len(images), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            pixels, errors = preprocess_batch(chunk, modality, self.spec)
            if errors:
                index, message = errors[0]
                from splip_engine.data.images import ImageDecodeError

                raise ImageDecodeError(f"image {start + index}: {message}")
            out[start:start + len(chunk)] = self.embed_pixels(pixels, modality)
        return out

    def embed_pixels(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        """Preprocessed pixels (N, 3, S, S) float32 -> (N, D) float32 embeddings."""
        self._check_modality(modality)
        expected = (3, self.image_size, self.image_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise SpLIPError(f"pixels of shape {tuple(pixels.shape)}: this engine takes (N, {', '.join(map(str, expected))})")
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        count = len(pixels)
        if count == 0:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        outputs = []
        for start in range(0, count, self.batch_size):
            batch = pixels[start:start + self.batch_size]
            real = len(batch)
            if self.fixed_batch and real < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - real, *expected), dtype=np.float32)
                batch = np.concatenate([batch, pad])
            outputs.append(np.asarray(self._embed_impl(batch, modality), dtype=np.float32)[:real])
        return np.concatenate(outputs)

    # ------------------------------------------------------------ internals
    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        """(B, 3, S, S) float32 -> (B, D) float32 L2-normalised; implemented per backend."""
        raise NotImplementedError

    @staticmethod
    def _check_modality(modality: str) -> None:
        if modality not in MODALITIES:
            raise SpLIPError(f"modality={modality!r}: must be one of {MODALITIES}")

    def close(self) -> None:
        """Release backend resources (device memory, sessions)."""

    def __enter__(self) -> "Encoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.embedding_dim}, image_size={self.image_size})"
