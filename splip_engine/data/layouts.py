"""The SBIR datasets as the ZS-SBIR code bases distribute them (SAKE, ZSE-SBIR, Doodle2Search),
one registry entry per dataset: where its sketch and photo class folders are under the dataset
root (the first existing candidate of each root; several photo roots are merged per class), the
split files that spell its class names, its default split, and the folder misspellings no
spelling rule can mend. `DataSource` is what the CLI's data options resolve to: a dataset under a
root, or generic sketch / photo roots.

    sketchy    256x256/sketch/tx_000000000000[_ready]/<class>/    (or sketch/tx_000000000000/)
               256x256/photo/tx_000000000000[_ready]/<class>/     the original photos (FG pairs)
             + EXTEND_image_sketchy[_ready]/<class>/ or extended_photo/<class>/   (Sketchy-Ext)
    tuberlin   png[_ready]/<class>/ (or sketches/, svg/)  +  ImageResized[_ready]/<class>/ (or images/)
    quickdraw  sketch/<class>/ (or sketches/)  +  images/<class>/
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from splip_engine.data.folder import SBIRFolder
from splip_engine.data.splits import load_dataset_classes
from splip_engine.errors import SpLIPError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayoutRoot:
    """One sketch or photo root of a layout: the first of `candidates` (paths relative to the
    dataset root) that exists is used; a missing optional root is left out with a warning."""

    candidates: tuple[str, ...]
    what: str
    required: bool = True


@dataclass(frozen=True)
class DatasetLayout:
    """Where a distributed dataset keeps its class folders, and how its classes are spelled."""

    name: str
    title: str
    sketch_roots: tuple[LayoutRoot, ...]
    photo_roots: tuple[LayoutRoot, ...]
    default_split: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Folder name -> the class name it means, for misspellings in the distributed folders."""

    def resolve(self, root: str | Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        """(sketch roots, photo roots) that exist under `root`; a clear error when a required one is missing."""
        root = Path(root)
        if not root.is_dir():
            raise SpLIPError(f"--root {root} is not a directory; pass the folder the {self.title} archive unpacked to")
        return self._found(root, self.sketch_roots), self._found(root, self.photo_roots)

    def _found(self, root: Path, roots: tuple[LayoutRoot, ...]) -> tuple[Path, ...]:
        found = []
        for part in roots:
            path = next((root / c for c in part.candidates if (root / c).is_dir()), None)
            if path is not None:
                found.append(path)
            elif part.required:
                present = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:12]
                raise SpLIPError(
                    f"--dataset {self.name} --root {root}: no {part.what} folder; looked for "
                    f"{', '.join(part.candidates)} under it, which holds {present}; pass the folder the "
                    f"{self.title} archive unpacked to, or --sketch-root/--photo-root for another layout")
            else:
                log.warning("%s: no %s under %s (looked for %s); going on without it", self.title, part.what, root,
                            ", ".join(part.candidates))
        return tuple(found)


def _variants(*paths: str) -> tuple[str, ...]:
    """Each path's SAKE-processed `_ready` variant first, then the path as distributed."""
    return tuple(v for p in paths for v in (f"{p}_ready", p))


LAYOUTS: dict[str, DatasetLayout] = {layout.name: layout for layout in (
    DatasetLayout(
        "sketchy", "Sketchy-Ext",
        sketch_roots=(LayoutRoot(_variants("256x256/sketch/tx_000000000000", "sketch/tx_000000000000"), "sketch"),),
        photo_roots=(
            LayoutRoot(_variants("256x256/photo/tx_000000000000", "photo/tx_000000000000"), "original photo"),
            LayoutRoot(_variants("EXTEND_image_sketchy") + ("extended_photo",), "extended photo", required=False),
        ),
        default_split="sketchy25",
    ),
    DatasetLayout(
        "tuberlin", "TU-Berlin-Ext",
        sketch_roots=(LayoutRoot(_variants("png") + ("sketches", "svg"), "sketch"),),
        photo_roots=(LayoutRoot(_variants("ImageResized") + ("images",), "photo"),),
        default_split="tuberlin30",
        # ImageResized/ spells most classes without spaces (matched by letters); these it misspells
        # or shortens (the renames in Doodle2Search's download_datasets.sh)
        aliases={"mouse": "mouse (animal)", "pipe": "pipe (for smoking)", "spacesshuttle": "space shuttle",
                 "wristwatching": "wrist-watch", "tromobone": "trombone", "chandeler": "chandelier",
                 "griaffe": "giraffe", "diamod": "diamond", "spidar": "spider"},
    ),
    DatasetLayout(
        "quickdraw", "QuickDraw-Ext",
        sketch_roots=(LayoutRoot(("sketch", "sketches"), "sketch"),),
        photo_roots=(LayoutRoot(("images",), "photo"),),
        default_split="quickdraw30",
    ),
)}
"""Dataset name (`--dataset`) -> its layout."""


def get_layout(name: str) -> DatasetLayout:
    """The layout registered as `name`; an unknown name lists the known ones."""
    if name not in LAYOUTS:
        raise SpLIPError(f"unknown dataset {name!r}; choose one of {sorted(LAYOUTS)} or pass --sketch-root/--photo-root")
    return LAYOUTS[name]


@dataclass(frozen=True)
class DataSource:
    """Where a dataset is: `dataset` (a LAYOUTS name) unpacked under `root`, or generic
    `sketch_root` / `photo_root` class folders; `split` names the unseen classes."""

    dataset: str = ""
    root: str = ""
    sketch_root: str = ""
    photo_root: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        if self.dataset:
            get_layout(self.dataset)
            if not self.root:
                raise SpLIPError(f"--dataset {self.dataset} needs --root DIR (the folder the dataset unpacked to)")
            if self.sketch_root or self.photo_root:
                raise SpLIPError("pass either --dataset/--root or --sketch-root/--photo-root, not both")
        elif self.root:
            raise SpLIPError(f"--root {self.root} needs --dataset {'|'.join(sorted(LAYOUTS))}")
        elif not (self.sketch_root and self.photo_root):
            raise SpLIPError("no dataset given: pass --dataset sketchy|tuberlin|quickdraw --root DIR, --data-root DIR "
                             "(with sketch/ and photo/) or --sketch-root and --photo-root (make a small one with "
                             "`splip-engine data mini --out mini/`)")
        if not self.split:
            raise SpLIPError("no split given: pass --split sketchy25|sketchy21|tuberlin30|quickdraw30 or a class list file")

    def open_folder(self) -> SBIRFolder:
        """The dataset's class folders: the layout's roots with its class spelling, or the generic roots."""
        if not self.dataset:
            return SBIRFolder(self.sketch_root, self.photo_root)
        layout = get_layout(self.dataset)
        sketch_roots, photo_roots = layout.resolve(self.root)
        return SBIRFolder(sketch_roots, photo_roots, class_names=load_dataset_classes(self.dataset),
                          aliases=layout.aliases)
