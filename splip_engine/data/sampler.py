"""Seeded, class-balanced triplet sampling (SPEC.md §2): anchor sketch, positive photo,
negative photo, as index triplets into an ImageSplit's `items("sketch")` / `items("photo")`."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from splip_engine.data.folder import ImageSplit
from splip_engine.data.pairs import fg_pair_key
from splip_engine.errors import SpLIPError


class TripletSampler:
    """Yields `(anchor, positive, negative)` index triplets, `len(self)` per epoch, seeded by
    (seed, epoch); use it as a DataLoader `sampler` over a TripletDataset of the same split.

    Category mode: the anchor's class c+ is drawn uniformly over classes (class-balanced), then a
    sketch and a photo of c+, and a photo of a uniformly drawn other class c-.
    Fine-grained mode: anchors are sketches with a paired photo (`fg_pair_key`) in a class with
    at least 2 photos; the positive is that paired photo, the negative another photo of c+.
    """

    def __init__(self, split: ImageSplit, *, seed: int = 0, fine_grained: bool = False,
                 num_triplets: int | None = None):
        self.seed = seed
        self.epoch = 0
        self.fine_grained = fine_grained
        sketches = split.items("sketch")
        photos = split.items("photo")
        n_classes = len(split.classes)
        self._photo_start, self._photo_count = _class_ranges([label for _, label in photos], n_classes)
        if fine_grained:
            anchors, positives = _paired_anchors(sketches, photos, self._photo_count)
            self._paired_photo = np.asarray(positives, dtype=np.int64)  # (A,) photo index per anchor
        else:
            anchors = [i for i, (_, label) in enumerate(sketches) if self._photo_count[label] > 0]
            self._negative_classes = np.flatnonzero(self._photo_count > 0)  # (C_photo,) classes with photos
            if len(self._negative_classes) < 2:
                raise SpLIPError(f"triplets need at least 2 classes with photos for negatives; this split has "
                                 f"{len(self._negative_classes)}")
            if not anchors:
                raise SpLIPError("triplets need sketches in classes that have photos; this split has none")
        self._anchors = np.asarray(anchors, dtype=np.int64)  # (A,) sketch indices, sorted by class
        anchor_labels = [sketches[i][1] for i in anchors]
        self._anchor_start, self._anchor_count = _class_ranges(anchor_labels, n_classes)
        self._classes = np.flatnonzero(self._anchor_count > 0)  # (C_used,) classes drawn as c+
        self.num_triplets = len(anchors) if num_triplets is None else num_triplets
        if self.num_triplets < 1:
            raise SpLIPError(f"num_triplets={num_triplets} must be >= 1")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch, so each epoch draws different (but reproducible) triplets."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_triplets

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = self.num_triplets
        positive_class = self._classes[rng.integers(0, len(self._classes), n)]  # (n,) c+
        slot = self._anchor_start[positive_class] + rng.integers(0, self._anchor_count[positive_class])  # (n,)
        anchors = self._anchors[slot]  # (n,) sketch indices
        photo_start = self._photo_start[positive_class]  # (n,)
        if self.fine_grained:
            positives = self._paired_photo[slot]  # (n,) the paired photos
            other = rng.integers(0, self._photo_count[positive_class] - 1)  # (n,) skips over the positive
            negatives = photo_start + other + (other >= positives - photo_start)
        else:
            positives = photo_start + rng.integers(0, self._photo_count[positive_class])
            n_neg = len(self._negative_classes)
            rank = np.searchsorted(self._negative_classes, positive_class)  # (n,) c+ among photo classes
            negative_class = self._negative_classes[(rank + rng.integers(1, n_neg, n)) % n_neg]  # (n,) c- != c+
            negatives = self._photo_start[negative_class] + rng.integers(0, self._photo_count[negative_class])
        yield from zip(anchors.tolist(), positives.tolist(), negatives.tolist(), strict=True)


def _class_ranges(labels: list[int], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, count) per class of a label list sorted by class, as (C,) int64 arrays."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return starts, counts


def _paired_anchors(sketches: list, photos: list, photo_count: np.ndarray) -> tuple[list[int], list[int]]:
    """Sketch indices with a paired photo in the same class (which has >= 2 photos, so a
    negative exists), in class order, and the index of each one's paired photo."""
    photo_of = {(fg_pair_key(path), label): i for i, (path, label) in enumerate(photos)}
    anchors: list[int] = []
    positives: list[int] = []
    for i, (path, label) in enumerate(sketches):
        j = photo_of.get((fg_pair_key(path), label))
        if j is not None and photo_count[label] >= 2:
            anchors.append(i)
            positives.append(j)
    if not anchors:
        raise SpLIPError(
            "fine-grained triplets need sketches paired with photos of the same class (Sketchy naming: "
            "<stem>-<n>.png pairs with <stem>.jpg) in classes with at least 2 photos; none found"
        )
    return anchors, positives
