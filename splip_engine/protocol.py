"""The ZS-SBIR evaluation protocol (SPEC.md §4): embed a dataset's parts with an encoder and score
ZS (unseen sketches vs unseen photos), GZS (vs seen + unseen photos) and FG-ZS (paired photo within
the query's class). Bad images are skipped and reported, never fatal."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from splip_engine.data.folder import ImageSplit, SBIRFolder
from splip_engine.data.pairs import fg_pair_key
from splip_engine.errors import SpLIPError

logger = logging.getLogger(__name__)

MODES = ("zs", "gzs", "fg")

GZS_SEEN_PHOTOS = {
    "all": "every photo of the seen classes, training photos included (as SEM-PCYC's GZS gallery draws them)",
    "held-out": "only the seen-class photos held out of training (the run's validation part: never trained on)",
}
"""Which seen-class photos join the GZS gallery (`gzs_seen_split`)."""


@dataclass
class EmbeddedPart:
    """Embeddings of one modality of a split: rows for the images that loaded."""

    embeddings: np.ndarray          # (N, D) float32, L2-normalised
    labels: np.ndarray              # (N,) class names (object)
    paths: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of skipped images


def embed_part(encoder, split: ImageSplit, modality: str, batch_size: int = 64, workers: int = 0) -> EmbeddedPart:
    """Embed every `modality` image of `split` with `encoder` (an Encoder), skipping bad files."""
    from splip_engine.runtime.pipeline import iter_pixel_batches

    items = [(split.classes[label], str(path)) for path, label in split.items(modality)]  # (class, path)
    chunks, labels, paths, errors = [], [], [], []
    for batch in iter_pixel_batches(items, modality, encoder.spec, batch_size, workers=workers):
        if batch.good:
            chunks.append(encoder.embed_pixels(batch.pixels, modality))
        labels += [batch.items[i][0] for i in batch.good]
        paths += [batch.items[i][1] for i in batch.good]
        errors += [(batch.items[i][1], reason) for i, reason in batch.errors]
    embeddings = np.concatenate(chunks) if chunks else np.empty((0, encoder.embedding_dim), np.float32)
    return EmbeddedPart(embeddings, np.asarray(labels, dtype=object), paths, errors)


def fg_pairs(queries: EmbeddedPart, gallery: EmbeddedPart) -> tuple[np.ndarray, np.ndarray]:
    """(query rows with a paired photo, their photo rows) by Sketchy naming (`fg_pair_key`)."""
    photo_row = {(label, fg_pair_key(p)): i for i, (label, p) in enumerate(zip(gallery.labels, gallery.paths))}
    rows, targets = [], []
    for i, (label, path) in enumerate(zip(queries.labels, queries.paths)):
        j = photo_row.get((label, fg_pair_key(path)))
        if j is not None:
            rows.append(i)
            targets.append(j)
    return np.asarray(rows, dtype=np.int64), np.asarray(targets, dtype=np.int64)


def gzs_seen_split(folder: SBIRFolder, seen: Sequence[str], photos: str = "all", fraction: float = 0.1,
                   seed: int = 0) -> ImageSplit:
    """The seen classes' part of the GZS gallery: all their photos, or (`photos="held-out"`) the
    ones `folder.held_out(seen, fraction, seed)` kept out of training, as train.py splits them."""
    if photos not in GZS_SEEN_PHOTOS:
        raise SpLIPError(f"unknown GZS seen-photo choice {photos!r}; choose one of {sorted(GZS_SEEN_PHOTOS)}")
    if photos == "all":
        return folder.subset(seen)
    if fraction <= 0:
        raise SpLIPError(f"GZS with held-out seen photos needs a held-out fraction > 0 (got {fraction}); "
                         "the training run held none out")
    return folder.held_out(seen, fraction, seed)[1]


def evaluate_protocol(encoder, unseen: ImageSplit, seen: ImageSplit | None = None,
                      modes: Sequence[str] = ("zs", "gzs", "fg"), ks: Sequence[int] = (100, 200),
                      batch_size: int = 64, workers: int = 0) -> dict[str, dict]:
    """Metrics per mode: `zs` / `gzs` -> retrieval_metrics keys, `fg` -> acc_1 / acc_5; plus
    `"_meta"` with counts, skipped files and timings. Each mode's dict has `n_queries` (the
    queries averaged over) and `n_gallery` (the photos ranked). GZS needs `seen` (the seen classes'
    gallery part, e.g. from `gzs_seen_split`)."""
    from splip_engine.evaluation import fg_accuracy, retrieval_metrics

    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SpLIPError(f"unknown evaluation modes {unknown}; choose from {MODES}")
    start = time.perf_counter()
    queries = embed_part(encoder, unseen, "sketch", batch_size, workers)
    photos = embed_part(encoder, unseen, "photo", batch_size, workers)
    results: dict[str, dict] = {}
    if "zs" in modes:
        results["zs"] = retrieval_metrics(queries.embeddings, queries.labels, photos.embeddings, photos.labels, ks=ks)
        results["zs"]["n_gallery"] = len(photos.paths)
    skipped = queries.errors + photos.errors
    if "gzs" in modes:
        if seen is None:
            raise SpLIPError("GZS evaluation needs the seen classes' photos too")
        seen_photos = embed_part(encoder, seen, "photo", batch_size, workers)
        skipped += seen_photos.errors
        gallery = np.concatenate([photos.embeddings, seen_photos.embeddings])
        gallery_labels = np.concatenate([photos.labels, seen_photos.labels])
        results["gzs"] = retrieval_metrics(queries.embeddings, queries.labels, gallery, gallery_labels, ks=ks)
        results["gzs"]["n_gallery"] = len(gallery)
    if "fg" in modes:
        rows, targets = fg_pairs(queries, photos)
        if len(rows):
            results["fg"] = fg_accuracy(queries.embeddings[rows], photos.embeddings, targets,
                                        q_categories=queries.labels[rows], g_categories=photos.labels)
            results["fg"]["n_gallery"] = len(photos.paths)  # ranked within the query's class
        else:
            logger.warning("no sketch/photo pairs found (Sketchy naming): FG-ZS skipped")
    results["_meta"] = {"n_sketches": len(queries.paths), "n_photos": len(photos.paths),
                        "skipped": [{"path": p, "reason": r} for p, r in skipped],
                        "seconds": round(time.perf_counter() - start, 2)}
    return results
