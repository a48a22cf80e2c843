"""Shared fixtures: a small synthetic SBIR dataset made once per session."""
from __future__ import annotations

import pytest

from splip_engine.data.mini import MiniDataset, make_mini_dataset


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> MiniDataset:
    """6 classes x 6 sketch/photo pairs at 32 px. Read-only: copy it before changing files."""
    return make_mini_dataset(tmp_path_factory.mktemp("mini") / "ds", classes=6, per_class=6, size=32)
