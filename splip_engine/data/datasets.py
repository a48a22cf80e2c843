"""Lazy torch Datasets over an ImageSplit. A bad image never stops an epoch: the item comes back
as a BadImage record, `collate_skip_bad` drops it from the batch and lists it under "bad", so
the training loop can report it (also from DataLoader worker processes)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from splip_engine.data.folder import ImageSplit
from splip_engine.data.images import ImageDecodeError, ImageSource

log = logging.getLogger(__name__)

Transform = Callable[[ImageSource], torch.Tensor]  # decodes too: transforms.train_transform / eval_transform


@dataclass(frozen=True)
class BadImage:
    """An image that could not be loaded: its path and the ImageDecodeError message."""

    path: str
    message: str


class _LazyImages(Dataset):
    """Shared loading: decode + transform, remembering bad files so they fail fast next time."""

    def __init__(self) -> None:
        self.bad_files: dict[str, BadImage] = {}
        """Bad images met by this process (in worker processes, see each batch's "bad")."""

    def _load(self, path: Path, transform: Transform) -> torch.Tensor | BadImage:
        key = str(path)
        if key in self.bad_files:
            return self.bad_files[key]
        try:
            return transform(path)  # the transform decodes (with the JPEG draft its size allows)
        except ImageDecodeError as e:
            bad = self.bad_files[key] = BadImage(key, str(e))
            log.warning("skipping bad image: %s", bad.message)
            return bad


class TripletDataset(_LazyImages):
    """Triplets of a split, indexed by TripletSampler's `(anchor, positive, negative)` keys.

    An item is {"sketch", "positive", "negative": (3, S, S) float32, "label": c+ (int),
    "negative_label": c- (int)}, or the BadImage of its first unreadable image.
    """

    def __init__(self, split: ImageSplit, sketch_transform: Transform, photo_transform: Transform):
        super().__init__()
        self.sketches = split.items("sketch")
        self.photos = split.items("photo")
        self.sketch_transform = sketch_transform
        self.photo_transform = photo_transform

    def __len__(self) -> int:
        return len(self.sketches)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any] | BadImage:
        anchor, positive, negative = key
        (sketch_path, label), (positive_path, _), (negative_path, negative_label) = (
            self.sketches[anchor], self.photos[positive], self.photos[negative])
        item: dict[str, Any] = {"label": label, "negative_label": negative_label}
        for name, path, transform in (("sketch", sketch_path, self.sketch_transform),
                                      ("positive", positive_path, self.photo_transform),
                                      ("negative", negative_path, self.photo_transform)):
            item[name] = self._load(path, transform)
            if isinstance(item[name], BadImage):
                return item[name]
        return item


class ImageDataset(_LazyImages):
    """Single labelled images (e.g. an evaluation's queries or gallery): an item is
    {"image": (3, S, S) float32, "label": int, "index": int}, or a BadImage."""

    def __init__(self, items: Sequence[tuple[Path, int]], transform: Transform):
        super().__init__()
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any] | BadImage:
        path, label = self.items[index]
        image = self._load(path, self.transform)
        if isinstance(image, BadImage):
            return image
        return {"image": image, "label": label, "index": index}


def collate_skip_bad(items: Sequence[dict[str, Any] | BadImage]) -> dict[str, Any]:
    """Stack the good items with torch's default_collate and list the bad ones under "bad".

    The batch always has "bad" (list of BadImage) and "size" (number of good items); the other
    keys are present only when size > 0.
    """
    good = [item for item in items if not isinstance(item, BadImage)]
    batch: dict[str, Any] = default_collate(good) if good else {}
    batch["bad"] = [item for item in items if isinstance(item, BadImage)]
    batch["size"] = len(good)
    return batch
