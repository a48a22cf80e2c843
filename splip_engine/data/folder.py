"""SBIR datasets on disk: `SKETCH_ROOT/<class>/*` and `PHOTO_ROOT/<class>/*` (SPEC.md §4), one
root or several merged per class, scanned once in a deterministic order, class names matched to the
split files' spelling, and split into seen / unseen / held-out parts. The layouts of the datasets
as distributed (Sketchy-Ext, TU-Berlin-Ext, QuickDraw-Ext) are in data/layouts.py."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splip_engine.data.classnames import closest_names, match_names
from splip_engine.data.pairs import fg_pair_key
from splip_engine.data.splits import load_unseen_classes
from splip_engine.errors import SpLIPError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
                              ".svg"})
"""Files with these suffixes (any case) are images (SVG sketches are rasterised, data/svg.py); every
other file in a class folder is ignored."""

RootArg = str | os.PathLike | Sequence[str | os.PathLike]


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
    `skipped` maps every other class to the reason it is not used.

    `sketch_root` / `photo_root`: one folder of class folders, or several merged per class (a
    dataset's original and extended photos: a file whose stem an earlier root of the class already
    has is a duplicate, counted once, so FG pairs keep pointing at the first root's photos).
    `class_names`: the names to spell classes by (a dataset's split files); each folder takes the
    name it matches (data/classnames.py: case, `_` / space, punctuation), else its own name;
    `aliases` maps misspelt folder names to the spelling to match instead. Photo folders that no
    sketch folder spells alike are matched to the sketch classes the same way.
    """

    def __init__(self, sketch_root: RootArg, photo_root: RootArg, class_names: Sequence[str] = (),
                 aliases: Mapping[str, str] | None = None):
        self.sketch_roots, self.photo_roots = _as_roots(sketch_root), _as_roots(photo_root)
        self.sketch_root, self.photo_root = self.sketch_roots[0], self.photo_roots[0]
        sketches, self.sketch_duplicates = _scan_roots(self.sketch_roots, "sketch", class_names, aliases)
        photos, self.photo_duplicates = _scan_roots(self.photo_roots, "photo", class_names, aliases)
        photos = _spell_like(photos, sketches)
        self.skipped: dict[str, str] = {}
        for name in sorted(set(sketches) | set(photos)):
            why = _unusable_reason(sketches.get(name), photos.get(name))
            if why:
                other = photos if name in sketches else sketches
                near = closest_names(name, [n for n in other if n not in sketches or n not in photos])
                self.skipped[name] = why + (f" (closest unpaired folders: {near})" if near else "")
        if self.skipped:
            log.warning("skipping %d class folders: %s", len(self.skipped),
                        "; ".join(f"{name}: {why}" for name, why in self.skipped.items()))
        self.classes: tuple[str, ...] = tuple(n for n in sorted(sketches) if n not in self.skipped)
        if not self.classes:
            raise SpLIPError(
                f"no class has images under both {_names(self.sketch_roots)} and {_names(self.photo_roots)}: sketch "
                f"classes {_preview(sketches)}, photo classes {_preview(photos)}; class folders must have the same names"
            )
        self.sketches = {name: sketches[name] for name in self.classes}
        self.photos = {name: photos[name] for name in self.classes}

    def split_classes(self, unseen: str | os.PathLike | Sequence[str]) -> tuple[list[str], list[str]]:
        """(seen, unseen) class names, each sorted. `unseen` is a split name (`sketchy25`, ...), a
        class list file, or the names themselves; each unseen name must match a usable class here
        (data/classnames.py), or one error lists every name that does not, with the closest folders."""
        names = load_unseen_classes(unseen) if isinstance(unseen, (str, os.PathLike)) else list(unseen)
        unseen_set = set(self._resolve(names, "unseen"))
        seen = [name for name in self.classes if name not in unseen_set]
        if not seen:
            raise SpLIPError("every class is unseen, none is left for training; check the split")
        return seen, [name for name in self.classes if name in unseen_set]

    def subset(self, classes: Sequence[str]) -> ImageSplit:
        """All images of `classes` (sorted), labelled by their index in that sorted list."""
        if not classes:
            raise SpLIPError("no classes requested; name at least one class")
        names = tuple(sorted(set(self._resolve(classes, "requested"))))
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

    def _resolve(self, names: Sequence[str], role: str) -> list[str]:
        """The usable class each of `names` matches; one error naming every name that matches
        none, with why (a skipped class) or the closest usable class names."""
        matched = match_names(names, self.classes)
        missing = [n for n in dict.fromkeys(names) if n not in matched]
        if missing:
            skipped = match_names(missing, self.skipped)
            reasons = ", ".join(f"{n!r} ({self._why_not(n, skipped.get(n))})" for n in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise SpLIPError(
                f"{len(missing)} {role} classes match no usable class under {_names(self.sketch_roots)} and "
                f"{_names(self.photo_roots)}: {reasons}{more}; does the split belong to this dataset?"
            )
        return [matched[n] for n in names]


    def _why_not(self, name: str, skipped: str | None) -> str:
        """Why `name` is no usable class: the skipped class it matches and why, or the closest classes."""
        if skipped is not None:
            return (f"class {skipped!r}: " if skipped != name else "") + self.skipped[skipped]
        return f"closest classes: {closest_names(name, self.classes) or 'none'}"


def _as_roots(roots: RootArg) -> tuple[Path, ...]:
    """One root or several, as a non-empty tuple of Paths."""
    found = (Path(roots),) if isinstance(roots, (str, os.PathLike)) else tuple(Path(r) for r in roots)
    if not found:
        raise SpLIPError("no root folder given; pass a folder with one subfolder per class")
    return found


def _scan_roots(roots: Sequence[Path], kind: str, class_names: Sequence[str], aliases: Mapping[str, str] | None,
                ) -> tuple[dict[str, tuple[Path, ...]], int]:
    """(class -> its image files, duplicates dropped): each root scanned, its folders named by
    `class_names` where they match, merged per class in root order; a file whose stem an earlier
    root gave the class already is a duplicate."""
    merged: dict[str, list[Path]] = {}
    stems: dict[str, set[str]] = {}
    duplicates = 0
    for root in roots:
        folders = _scan_root(root, kind)
        spelling = match_names(folders, class_names, aliases) if class_names else {}
        earlier = {name: set(found) for name, found in stems.items()}  # stems of the roots before this one
        for folder, files in folders.items():
            name = spelling.get(folder, folder)
            kept = [f for f in files if f.stem not in earlier.get(name, ())]
            duplicates += len(files) - len(kept)
            merged.setdefault(name, []).extend(kept)
            stems.setdefault(name, set()).update(f.stem for f in kept)
    if duplicates:
        log.info("%s roots %s: %d files repeat a stem of an earlier root and are counted once", kind,
                 _names(roots), duplicates)
    return {name: tuple(files) for name, files in merged.items()}, duplicates


def _spell_like(photos: dict[str, tuple[Path, ...]], sketches: Mapping[str, object]) -> dict[str, tuple[Path, ...]]:
    """`photos` with each class no sketch class spells identically renamed to the one unpaired
    sketch class it matches (data/classnames.py), when there is one."""
    unpaired = [name for name in sketches if name not in photos]
    renamed = match_names([name for name in photos if name not in sketches], unpaired)
    if renamed:
        log.info("photo folders matched to sketch classes by spelling: %s", renamed)
    result: dict[str, tuple[Path, ...]] = {}
    for name, files in photos.items():
        target = renamed.get(name, name)
        result[target] = result.get(target, ()) + files
    return result


def _names(roots: Sequence[Path]) -> str:
    """Roots for messages: one path, or several joined with ' + '."""
    return " + ".join(str(r) for r in roots)


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
