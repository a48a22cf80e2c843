"""Reliability fixtures: the tiny checkpoint (shared with tests/runtime), its exported ONNX engine
and that engine opened once, the way users deploy it (ONNX Runtime on CPU)."""
from __future__ import annotations

import pytest

from runtime.conftest import tiny_checkpoint  # noqa: F401  (a fixture, re-exported for these tests)


@pytest.fixture(scope="session")
def engine_dir(tiny_checkpoint, tmp_path_factory):  # noqa: F811
    """An fp32 engine dir (sketch.onnx, photo.onnx, checkpoint/, manifest.json) of the tiny model."""
    from splip_engine.export import export_engines

    out = tmp_path_factory.mktemp("reliability_engine") / "fp32"
    report = export_engines(tiny_checkpoint, out)
    assert report, report.errors
    return out


@pytest.fixture(scope="session")
def encoder(engine_dir):
    """`load_engine(engine_dir)` with ONNX Runtime on CPU: the Python API every entry point is compared with."""
    from splip_engine.runtime import load_engine

    with load_engine(engine_dir, backend="onnxruntime", device="cpu") as opened:
        yield opened


GALLERY_SIZE = 200


@pytest.fixture(scope="session")
def gallery_index_dir(encoder, tmp_path_factory):
    """A saved flat index of GALLERY_SIZE seeded random unit vectors (well-separated scores, so the
    top-k order is stable under batching noise), tied to `encoder`'s engine."""
    import numpy as np

    from splip_engine.index import GalleryIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((GALLERY_SIZE, encoder.embedding_dim)).astype(np.float32)  # (G, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    engine = {"engine_hash": encoder.manifest["engine_hash"], "embedding_dim": encoder.embedding_dim}
    return GalleryIndex.build(vectors, [f"photo-{i:03d}" for i in range(GALLERY_SIZE)], "flat",
                              engine_info=engine).save(tmp_path_factory.mktemp("gallery") / "index")
