"""Encoder: the one base class of every runtime backend (torch, ONNX Runtime, TensorRT).

The public `embed()` checks and preprocesses its inputs exactly as training did (the manifest's
preprocessing), batches them and calls the backend's `_embed_impl()` on float32 pixels.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def bucket_sizes(batch_size: int, wanted: Sequence[int]) -> tuple[int, ...]:
    """The static batch sizes an engine runs with at most `batch_size` rows per call: the
    `wanted` ones below it, and `batch_size` itself (so every batch has a bucket)."""
    if batch_size < 1 or any(b < 1 for b in wanted):
        raise SpLIPError(f"batch sizes must be >= 1, got batch_size={batch_size}, buckets={tuple(wanted)}")
    return tuple(sorted({b for b in wanted if b < batch_size} | {batch_size}))


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `rows` (buckets ascending, rows <= the largest)."""
    return next(b for b in buckets if b >= rows)


class Encoder:
    """Embeds sketches / photos with one engine. Subclasses implement `_embed_impl`.

    `batch_buckets`: when set (static-shape engines: CUDA graphs, compiled graphs, fixed-shape
    plans), each batch is padded with zero rows to the smallest bucket that holds it and the
    padding dropped from the result (rows are independent: no op mixes images of a batch).
    `device`: where the engine computes ("cpu" or "cuda").
    """

    backend = "base"
    device = "cpu"

    def __init__(self, manifest: dict[str, Any], batch_size: int = 32, batch_buckets: Sequence[int] | None = None):
        from splip_engine.data.transforms import PreprocessSpec

        self.manifest = manifest
        self.embedding_dim = int(manifest["embedding_dim"])
        self.image_size = int(manifest["image_size"])
        self.spec = PreprocessSpec(image_size=self.image_size, mean=tuple(manifest["mean"]), std=tuple(manifest["std"]))
        self.batch_buckets = bucket_sizes(batch_size, batch_buckets) if batch_buckets else None
        self.batch_size = self.batch_buckets[-1] if self.batch_buckets else batch_size

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
        """Preprocessed pixels (N, 3, S, S) float32 -> (N, D) float32 embeddings. A torch tensor
        (decoded on the GPU, say) goes through `embed_tensor`, staying on its device until the result."""
        self._check_modality(modality)
        if not isinstance(pixels, np.ndarray):
            return self.embed_tensor(pixels, modality).cpu().numpy()
        expected = (3, self.image_size, self.image_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise SpLIPError(f"pixels of shape {tuple(pixels.shape)}: this engine takes (N, {', '.join(map(str, expected))})")
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if len(pixels) == 0:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        batches = [pixels[start:start + self.batch_size] for start in range(0, len(pixels), self.batch_size)]
        outputs = self._run_batches([self._padded(batch) for batch in batches], modality)
        return np.concatenate([np.asarray(out, dtype=np.float32)[:len(batch)] for batch, out in zip(batches, outputs)])

    def embed_tensor(self, pixels: "torch.Tensor", modality: str) -> "torch.Tensor":
        """Preprocessed pixels (N, 3, S, S) as a torch tensor (on any device) -> (N, D) float32
        embeddings on the same device. Backends on CUDA override this to stay on the device
        (no host round trip); this default copies through host memory."""
        import torch

        embeddings = self.embed_pixels(pixels.detach().float().cpu().numpy(), modality)
        return torch.from_numpy(embeddings).to(pixels.device)

    # ------------------------------------------------------------ internals
    def _padded(self, batch: np.ndarray) -> np.ndarray:
        """`batch` (n, 3, S, S) padded with zero rows to its bucket (unchanged without buckets)."""
        if not self.batch_buckets:
            return batch
        rows = bucket_for(len(batch), self.batch_buckets)
        if rows == len(batch):
            return batch
        return np.concatenate([batch, np.zeros((rows - len(batch), *batch.shape[1:]), dtype=batch.dtype)])

    def _run_batches(self, batches: list[np.ndarray], modality: str) -> Iterator[np.ndarray]:
        """Embeddings of each (padded) batch in order; backends may overlap copies with compute."""
        for batch in batches:
            yield self._embed_impl(batch, modality)

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
