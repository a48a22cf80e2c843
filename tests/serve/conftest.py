"""Serve fixtures: a tiny engine, a seeded gallery index, sketch PNGs."""
from __future__ import annotations

import numpy as np
import pytest

from splip_engine import SpLIPConfig, build_model, save_checkpoint

from .helpers import make_png

GALLERY_SIZE = 200


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random-init SpLIP checkpoint dir (D = 64, 32 px), which load_engine opens as an engine."""
    import torch

    torch.manual_seed(0)
    return save_checkpoint(build_model(SpLIPConfig(clip_model="tiny", pretrained="")),
                           tmp_path_factory.mktemp("serve_ckpt"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint):
    """The torch runtime Encoder of `tiny_checkpoint`."""
    from splip_engine.runtime import load_engine

    with load_engine(tiny_checkpoint, backend="torch", device="cpu") as encoder:
        yield encoder


@pytest.fixture(scope="session")
def gallery_index(tiny_encoder):
    """A flat index over seeded random unit vectors: well-separated scores, so top-k order is
    stable under the float noise of batched vs single embedding."""
    from splip_engine.index import GalleryIndex

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((GALLERY_SIZE, tiny_encoder.embedding_dim)).astype(np.float32)  # (G, D)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    return GalleryIndex.build(gallery, [f"photo-{i:03d}" for i in range(GALLERY_SIZE)], kind="flat")


@pytest.fixture(scope="session")
def sketches() -> list[bytes]:
    return [make_png(seed) for seed in range(32)]
