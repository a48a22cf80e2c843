"""The standard ZS-SBIR unseen-class lists (SPEC.md §4), shipped in `data/splits/`, or any
class list file: one class name per line, spelled as the dataset's folders spell it."""
from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

from splip_engine.errors import SpLIPError

log = logging.getLogger(__name__)

SPLITS = {
    "sketchy25": "unseen_sketchy25.txt",
    "sketchy21": "unseen_sketchy21.txt",
    "tuberlin30": "unseen_tuberlin30.txt",
    "quickdraw30": "unseen_quickdraw30.txt",
}
"""Split name -> its unseen-class file in `splip_engine/data/splits/`."""

DATASET_CLASSES = {
    "sketchy": ("seen_sketchy.txt", "unseen_sketchy25.txt"),
    "tuberlin": ("seen_tuberlin.txt", "unseen_tuberlin30.txt"),
    "quickdraw": ("seen_quickdraw.txt", "unseen_quickdraw30.txt"),
}
"""Dataset -> the split files that together name all its classes (125, 250 and 110), spelled as
the ZS-SBIR code bases spell them."""


def load_unseen_classes(split: str | os.PathLike) -> list[str]:
    """Unseen class names of a standard split (`sketchy25`, `sketchy21`, `tuberlin30`,
    `quickdraw30`) or of a class list file given by path, in file order."""
    if isinstance(split, str) and split in SPLITS:
        return _parse_class_list(_read_shipped(SPLITS[split]), split)
    path = Path(split)
    if not path.is_file():
        raise SpLIPError(
            f"unknown split {str(split)!r}: not one of {sorted(SPLITS)} and not a class list file "
            "(a text file with one class name per line)"
        )
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpLIPError(f"cannot read class list {path}: {e}") from e
    return _parse_class_list(text, str(path))


def load_dataset_classes(dataset: str) -> list[str]:
    """Every class name of a dataset (`sketchy`, `tuberlin`, `quickdraw`), as its split files spell them."""
    if dataset not in DATASET_CLASSES:
        raise SpLIPError(f"unknown dataset {dataset!r}; the split files cover {sorted(DATASET_CLASSES)}")
    names = [name for file in DATASET_CLASSES[dataset] for name in _parse_class_list(_read_shipped(file), file)]
    return list(dict.fromkeys(names))


def _read_shipped(file: str) -> str:
    """A class list file shipped in `splip_engine/data/splits/`."""
    return resources.files("splip_engine.data").joinpath("splits", file).read_text("utf-8")


def _parse_class_list(text: str, source: str) -> list[str]:
    """Non-blank lines, stripped (names may contain inner spaces); duplicates dropped with a warning."""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise SpLIPError(f"class list {source} is empty; it needs one class name per line")
    unique = list(dict.fromkeys(names))
    if len(unique) != len(names):
        log.warning("class list %s names %d classes more than once; using each once", source,
                    len(names) - len(unique))
    return unique
