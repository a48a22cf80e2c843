"""SBIR datasets on disk: `SKETCH_ROOT/<class>/*` and `PHOTO_ROOT/<class>/*` (SPEC.md §4),
scanned once in a deterministic order and split into seen / unseen / held-out parts."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splip_engine.data.pairs import fg_pair_key
from splip_engine.data.splits import load_unseen_classes
from splip_engine.errors import SpLIPError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
"""Files with these suffixes (any case) are images; every other file in a class folder is ignored."""


@dataclass(frozen=True)
class ImageSplit:
    """Sketch and photo files per class for one part of a dataset (train, validation, test).

    Labels are indices into `classes` (sorted names), so a train split and its validation
    split, both over the seen classes, share labels.
    """

    classes: tuple[str, ...]
    sketches: Mapping[str, tuple[Path, ...]]
    photos: Mapping[str, tuple[Path, ...]]

    def items(self, modality: str) -> list[tuple[Path, int]]:
        """(path, label) of every image of `modality` ("sketch" | "photo"), class by class."""
        files = {"sketch": self.sketches, "photo": self.photos}.get(modality)
        if files is None:
            raise SpLIPError(f"unknown modality {modality!r}; use 'sketch' or 'photo'")
        return [(path, label) for label, name in enumerate(self.classes) for path in files[name]]


class SBIRFolder:
    """Class folders of sketches and photos. `classes` are those with images on both sides;
    `skipped` maps every other class folder to the reason it is not used."""

    def __init__(self, sketch_root: str | os.PathLike, photo_root: str | os.PathLike):
        self.sketch_root = Path(sketch_root)
        self.photo_root = Path(photo_root)
        sketches = _scan_root(self.sketch_root, "sketch")
        photos = _scan_root(self.photo_root, "photo")
        self.skipped: dict[str, str] = {}
        for name in sorted(set(sketches) | set(photos)):
            why = _unusable_reason(sketches.get(name), photos.get(name))
            if why:
                self.skipped[name] = why
        if self.skipped:
            log.warning("skipping %d class folders: %s", len(self.skipped),
                        "; ".join(f"{name}: {why}" for name, why in self.skipped.items()))
        self.classes: tuple[str, ...] = tuple(n for n in sorted(sketches) if n not in self.skipped)
        if not self.classes:
            raise SpLIPError(
                f"no class has images under both {self.sketch_root} and {self.photo_root}: sketch classes "
                f"{_preview(sketches)}, photo classes {_preview(photos)}; class folders must have the same names"
            )
        self.sketches = {name: sketches[name] for name in self.classes}
        self.photos = {name: photos[name] for name in self.classes}

    def split_classes(self, unseen: str | os.PathLike | Sequence[str]) -> tuple[list[str], list[str]]:
        """(seen, unseen) class names, each sorted. `unseen` is a split name (`sketchy25`, ...), a
        class list file, or the names themselves; each unseen name must be a usable class here."""
        names = load_unseen_classes(unseen) if isinstance(unseen, (str, os.PathLike)) else list(unseen)
        self._check_known(names, "unseen")
        unseen_set = set(names)
        seen = [name for name in self.classes if name not in unseen_set]
        if not seen:
            raise SpLIPError("every class is unseen, none is left for training; check the split")
        return seen, [name for name in self.classes if name in unseen_set]

    def subset(self, classes: Sequence[str]) -> ImageSplit:
        """All images of `classes` (sorted), labelled by their index in that sorted list."""
        if not classes:
            raise SpLIPError("no classes requested; name at least one class")
        self._check_known(classes, "requested")
        names = tuple(sorted(set(classes)))
        return ImageSplit(names, {n: self.sketches[n] for n in names}, {n: self.photos[n] for n in names})

    def held_out(self, seen: Sequence[str], fraction: float = 0.1, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
        """(train, validation) over the `seen` classes: about `fraction` of each class's photos,
        with their paired sketches (`fg_pair_key`), plus the same share of unpaired sketches, go
        to validation; each class keeps at least one image of each kind in train. Seeded."""
        if not 0 <= fraction < 1:
            raise SpLIPError(f"held-out fraction {fraction} must be in [0, 1)")
        full = self.subset(seen)
        rng = np.random.default_rng(seed)
        val_sketches, val_photos = {}, {}
        for name in full.classes:
            photos, sketches = full.photos[name], full.sketches[name]
            val_photos[name] = _pick(photos, fraction, rng)
            val_keys = {fg_pair_key(p) for p in val_photos[name]}
            photo_keys = {fg_pair_key(p) for p in photos}
            unpaired = tuple(s for s in sketches if fg_pair_key(s) not in photo_keys)
            val_sketches[name] = {s for s in sketches if fg_pair_key(s) in val_keys} | _pick(unpaired, fraction, rng)

        def part(files: Mapping[str, tuple[Path, ...]], val: Mapping[str, set[Path]], keep: bool):
            return {n: tuple(f for f in files[n] if (f in val[n]) != keep) for n in full.classes}

        train = ImageSplit(full.classes, part(full.sketches, val_sketches, True), part(full.photos, val_photos, True))
        val = ImageSplit(full.classes, part(full.sketches, val_sketches, False), part(full.photos, val_photos, False))
        return train, val

    def _check_known(self, names: Sequence[str], role: str) -> None:
        """Refuse class names that are not usable here, saying why for each."""
        missing = [n for n in dict.fromkeys(names) if n not in self.sketches]
        if missing:
            reasons = ", ".join(f"{n!r} ({self.skipped.get(n, 'no such class folder')})" for n in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise SpLIPError(
                f"{len(missing)} {role} classes are not usable classes under {self.sketch_root} and "
                f"{self.photo_root}: {reasons}{more}; does the split belong to this dataset?"
            )


def _scan_root(root: Path, kind: str) -> dict[str, tuple[Path, ...]]:
    """Class name -> its image files (sorted) for every non-hidden subfolder of `root`."""
    if not root.exists():
        raise SpLIPError(f"{kind} root {root} does not exist; pass the folder with one subfolder per class")
    if not root.is_dir():
        raise SpLIPError(f"{kind} root {root} is not a directory; pass the folder with one subfolder per class")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise SpLIPError(f"{kind} root {root} has no class folders; expected {root}/<class>/<image files>")
    found, n_ignored = {}, 0
    for folder in folders:
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        found[folder.name] = tuple(f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS)
        n_ignored += len(files) - len(found[folder.name])
    if n_ignored:
        log.info("%s root %s: ignored %d files without an image extension", kind, root, n_ignored)
    return found


def _pick(files: tuple[Path, ...], fraction: float, rng: np.random.Generator) -> set[Path]:
    """A random `fraction` of `files`, at least one and never all when fraction > 0 and there are >= 2."""
    if fraction == 0 or len(files) < 2:
        return set()
    count = min(max(round(fraction * len(files)), 1), len(files) - 1)
    return {files[i] for i in rng.permutation(len(files))[:count]}


def _unusable_reason(sketches: tuple[Path, ...] | None, photos: tuple[Path, ...] | None) -> str | None:
    """Why a class with these sketch / photo files (None = no folder) cannot be used, or None."""
    if photos is None:
        return "a sketch folder but no photo folder"
    if sketches is None:
        return "a photo folder but no sketch folder"
    if not sketches:
        return "its sketch folder has no images"
    if not photos:
        return "its photo folder has no images"
    return None


def _preview(classes: Mapping[str, object], limit: int = 5) -> str:
    """A few names of `classes` for error messages."""
    names = sorted(classes)
    return str(names[:limit])[:-1] + (f", ... {len(names)} in all]" if len(names) > limit else "]")
