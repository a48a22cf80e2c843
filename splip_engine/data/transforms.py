"""The one image preprocessing shared by training, evaluation, the torch backend and the
ONNX / TensorRT runtime, so that every path feeds the encoder the same numbers (SPEC.md §3).

Sketches: pad to a square with white, then resize (`pad_square_white`). Photos: resize the
shorter side, then centre-crop (`resize_center_crop`, open_clip's eval transform). Both resize
with PIL bicubic, then scale to 0..1 and normalise with the CLIP mean/std in float32.

Two steps, so batch jobs can decode in worker processes and ship 1 byte per pixel instead of 4:
`preprocess_uint8` (decode -- a JPEG larger than the model needs in the DCT domain, see
images.load_image's `draft_size` -- then the geometry; (S, S, 3) uint8) and `normalise_batch`
((N, S, S, 3) uint8 -> (N, 3, S, S) float32). `preprocess` is the two in one; every entry point
(training, evaluation, `embed`, serving) goes through them, so the numbers never depend on it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from splip_engine.config import MODALITIES
from splip_engine.data.images import WHITE, ImageDecodeError, ImageSource, load_image
from splip_engine.errors import SpLIPError

if TYPE_CHECKING:
    import torch

OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

PREPROCESS_MODES = {"sketch": "pad_square_white", "photo": "resize_center_crop"}
"""Geometric preprocessing per modality; the names are recorded in engine manifests."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Output size and normalisation of the encoder input; recorded in engine manifests."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_DATASET_MEAN
    std: tuple[float, float, float] = OPENAI_DATASET_STD
    jpeg_draft: bool = True  # decode JPEGs at the DCT scale the image size needs (benchmarks/RESULTS.md)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"PreprocessSpec.image_size={self.image_size!r}: must be an int >= 1")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"PreprocessSpec.{name}={getattr(self, name)!r}: needs 3 values (R, G, B)")
        if min(self.std) <= 0:
            raise ValueError(f"PreprocessSpec.std={self.std!r}: every value must be > 0")
        if not isinstance(self.jpeg_draft, bool):
            raise ValueError(f"PreprocessSpec.jpeg_draft={self.jpeg_draft!r}: must be True or False")

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """The least decoded size either geometry needs (its shorter side >= image_size), or None."""
        return (self.image_size, self.image_size) if self.jpeg_draft else None

    @classmethod
    def for_model(cls, model: Any) -> PreprocessSpec:
        """The spec a SpLIP model expects: its image size and its CLIP's mean/std."""
        cfg = getattr(getattr(getattr(model, "clip", None), "visual", None), "preprocess_cfg", None) or {}
        return cls(int(model.image_size), cfg.get("mean", OPENAI_DATASET_MEAN), cfg.get("std", OPENAI_DATASET_STD))

    def to_dict(self) -> dict[str, Any]:
        """JSON form for manifests, with the per-modality modes."""
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "jpeg_draft": self.jpeg_draft, "modes": dict(PREPROCESS_MODES)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Inverse of to_dict; refuses modes this version does not implement."""
        modes = d.get("modes", PREPROCESS_MODES)
        if modes != PREPROCESS_MODES:
            raise SpLIPError(f"preprocessing modes {modes} are not supported by this version "
                             f"(it implements {PREPROCESS_MODES}); upgrade splip-engine")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


def preprocess(image: ImageSource, modality: str, spec: PreprocessSpec) -> np.ndarray:
    """Encoder input for one image (any `load_image` source): (3, S, S) float32, normalised."""
    return normalise_batch(preprocess_uint8(image, modality, spec)[None], spec)[0]


def preprocess_uint8(image: ImageSource, modality: str, spec: PreprocessSpec) -> np.ndarray:
    """Decode (JPEG draft when `spec.jpeg_draft`) and apply the modality's geometry: (S, S, 3) uint8."""
    geometry = _geometry(modality)
    return np.asarray(geometry(load_image(image, draft_size=spec.draft_size), spec.image_size))


def normalise_batch(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32: x / 255, minus mean, over std (torchvision's
    float32 operations in its order, so a batch gives exactly the numbers of `preprocess` and of
    open_clip's transform), computed in place in the output: one pass per operation."""
    out = np.empty((pixels.shape[0], 3, *pixels.shape[1:3]), np.float32)  # (N, 3, S, S)
    np.copyto(out, pixels.transpose(0, 3, 1, 2))  # uint8 -> float32, channels first
    out /= np.float32(255)
    out -= np.asarray(spec.mean, np.float32)[:, None, None]
    out /= np.asarray(spec.std, np.float32)[:, None, None]
    return out


def preprocess_batch_uint8(
    sources: Sequence[ImageSource], modality: str, spec: PreprocessSpec
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """`preprocess_uint8` over many images, skipping bad ones instead of raising.

    Returns (images (N_ok, S, S, 3) uint8 in input order without the bad ones,
    errors [(index in `sources`, message)]).
    """
    _geometry(modality)
    size = spec.image_size
    images = np.empty((len(sources), size, size, 3), np.uint8)  # (N, S, S, 3)
    errors: list[tuple[int, str]] = []
    n_ok = 0
    for index, source in enumerate(sources):
        try:
            images[n_ok] = preprocess_uint8(source, modality, spec)
            n_ok += 1
        except ImageDecodeError as e:
            errors.append((index, str(e)))
    return images[:n_ok], errors


def preprocess_batch(
    sources: Sequence[ImageSource], modality: str, spec: PreprocessSpec
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Load and preprocess many images, skipping bad ones instead of raising.

    Returns (images (N_ok, 3, S, S) float32 in input order without the bad ones,
    errors [(index in `sources`, message)]).
    """
    pixels, errors = preprocess_batch_uint8(sources, modality, spec)
    return normalise_batch(pixels, spec), errors


def eval_transform(modality: str, spec: PreprocessSpec) -> Callable[[Image.Image], torch.Tensor]:
    """`preprocess` as a picklable callable returning a torch tensor (3, S, S), for DataLoaders."""
    return _TensorTransform(modality, spec, train=False)


def train_transform(modality: str, spec: PreprocessSpec) -> Callable[[Image.Image], torch.Tensor]:
    """Training augmentation: the eval geometry, then a random resized crop (scale 0.8-1.0) and a
    random horizontal flip (torch RNG, so DataLoader worker seeding applies); tensor (3, S, S)."""
    return _TensorTransform(modality, spec, train=True)


class _TensorTransform:
    """Image (any `load_image` source; a path or bytes gets the JPEG draft) -> normalised torch
    tensor (3, S, S); a class so DataLoader workers can pickle it."""

    def __init__(self, modality: str, spec: PreprocessSpec, train: bool):
        self.geometry = _geometry(modality)
        self.spec = spec
        self.train = train

    def __call__(self, image: ImageSource) -> torch.Tensor:
        import torch

        square = self.geometry(load_image(image, draft_size=self.spec.draft_size), self.spec.image_size)
        if self.train:
            from torchvision import transforms as T

            size = self.spec.image_size
            square = T.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=T.InterpolationMode.BICUBIC)(square)
            square = T.RandomHorizontalFlip()(square)
        return torch.from_numpy(normalise_batch(np.asarray(square)[None], self.spec)[0])


def _geometry(modality: str) -> Callable[[Image.Image, int], Image.Image]:
    """The geometric step for `modality`; unknown modalities are refused with the valid ones."""
    if modality not in MODALITIES:
        raise SpLIPError(f"unknown modality {modality!r}; use one of {list(MODALITIES)}")
    return _GEOMETRIES[PREPROCESS_MODES[modality]]


def _pad_square_white(image: Image.Image, size: int) -> Image.Image:
    """Centre the image on a white square of its longer side, then resize to size x size."""
    width, height = image.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    return image if side == size else image.resize((size, size), Image.BICUBIC)


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (torchvision Resize rounding), then centre-crop."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size != image.size:
        image = image.resize(new_size, Image.BICUBIC)
    if new_size == (size, size):
        return image  # square already: the crop would copy it unchanged
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


_GEOMETRIES = {"pad_square_white": _pad_square_white, "resize_center_crop": _resize_center_crop}
