"""Fine-grained sketch <-> photo pairing by Sketchy's file naming (SPEC.md §4)."""
from __future__ import annotations

import os
import re
from pathlib import Path

_SKETCH_SUFFIX = re.compile(r"-\d+$")


def fg_pair_key(path: str | os.PathLike) -> str:
    """Instance key shared by a sketch and its photo (Sketchy naming): the file stem without a
    trailing `-<n>`, so `n02691156_10151-1.png` and `n02691156_10151.jpg` both give
    `n02691156_10151`."""
    return _SKETCH_SUFFIX.sub("", Path(path).stem)
