"""Where the latest training run put its checkpoint: `runs/latest`, a text file holding the path.

`train` calls `record_latest_checkpoint` after writing a checkpoint; `export` (with no
--checkpoint) calls `find_latest_checkpoint`. Both sides share LATEST_FILE through this module.
"""
from __future__ import annotations

import os
from pathlib import Path

from splip_engine.errors import CheckpointError
from splip_engine.io_utils import write_text_atomic

LATEST_FILE = Path("runs") / "latest"
"""Relative to the current directory, like train's default output `runs/`."""
NO_CHECKPOINT_HELP = (
    "no checkpoint found: train one with `splip-engine train ...` or pass --checkpoint DIR "
    "(or --clip-model tiny --pretrained '' for an untrained model)"
)


def record_latest_checkpoint(path: str | Path) -> Path:
    """Write `path` (relative to the current directory where possible) into runs/latest."""
    path = Path(path)
    try:
        text = os.path.relpath(path.resolve(), Path.cwd())
    except ValueError:  # another drive (Windows): keep it absolute
        text = str(path.resolve())
    write_text_atomic(LATEST_FILE, text + "\n")
    return LATEST_FILE


def find_latest_checkpoint() -> Path:
    """The checkpoint dir named in runs/latest; CheckpointError saying how to get one otherwise."""
    if not LATEST_FILE.is_file():
        raise CheckpointError(NO_CHECKPOINT_HELP)
    recorded = LATEST_FILE.read_text().strip()
    path = Path(recorded)
    if not recorded or not path.is_dir():
        raise CheckpointError(
            f"{LATEST_FILE} names checkpoint {recorded!r}, which does not exist; {NO_CHECKPOINT_HELP}"
        )
    return path
