"""Serve fixtures: the tiny checkpoint served by the torch backend, the shared gallery index, sketch PNGs."""
from __future__ import annotations

import pytest

from .helpers import make_png


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint):
    """The torch runtime Encoder of `tiny_checkpoint` (a checkpoint dir served as an engine)."""
    from splip_engine.runtime import load_engine

    with load_engine(tiny_checkpoint, backend="torch", device="cpu") as encoder:
        yield encoder


@pytest.fixture(scope="session")
def gallery_index(tiny_gallery_index_dir):
    """The shared tiny gallery index, loaded once for the serve tests."""
    from splip_engine.index import GalleryIndex

    return GalleryIndex.load(tiny_gallery_index_dir)


@pytest.fixture(scope="session")
def sketches() -> list[bytes]:
    return [make_png(seed) for seed in range(32)]
