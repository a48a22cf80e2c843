"""Shared session fixtures, one per test artefact, used by every test directory: the tiny SpLIP
config and model, its checkpoint, its fp32 ONNX engine (traced once, exported once), that engine
opened with ONNX Runtime on CPU (how users deploy it), a saved flat gallery index tied to it, and
the small synthetic SBIR dataset (`mini`)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis.configuration import set_hypothesis_home_dir

from splip_engine import SpLIPConfig, build_model, save_checkpoint

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="splip-hypothesis-"))  # tests write only under tmp dirs, not .hypothesis/

GALLERY_SIZE = 200
"""Rows of `tiny_gallery_index_dir`."""

_REPO_LATEST = Path(__file__).parents[1] / "runs" / "latest"  # what `train` records and `export --fp16` reads


def _latest_state() -> tuple[int, int] | None:
    try:
        stat = _REPO_LATEST.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


_latest_seen = {"state": _latest_state()}  # as the session found it; updated after each phase that changed it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Tests write only under tmp dirs: a test phase (fixtures included) that wrote runs/latest in the
    repository root fails, since an `export --fp16` typed there afterwards would export its checkpoint."""
    report = (yield).get_result()
    now = _latest_state()
    if now != _latest_seen["state"]:
        _latest_seen["state"] = now
        report.outcome = "failed"
        report.longrepr = (f"{_REPO_LATEST} was written during {call.when} of this test (or a fixture it set up): "
                           "tests must write only under tmp dirs (monkeypatch.chdir(tmp_path) before training)")


@pytest.fixture(scope="session", autouse=True)
def cpu_auto_pinned(tmp_path_factory):
    """`backend="auto"` on CPU times the engine's variants and picks the fastest (runtime/cpu_auto.py):
    OpenVINO bf16 on a bf16 CPU when it wins, ONNX Runtime when the machine is loaded differently. The
    tests compare engines with ONNX Runtime references at fp32 tolerances, so pin auto to ONNX Runtime
    (subprocesses inherit it) and keep any cached choice under a tmp dir; the tests of auto itself
    (tests/runtime/test_openvino.py) unset the pin."""
    import os

    pinned = {"SPLIP_ENGINE_CACHE": str(tmp_path_factory.mktemp("splip-engine-cache")),
              "SPLIP_CPU_ENGINE": "onnxruntime"}
    previous = {name: os.environ.get(name) for name in pinned}
    os.environ.update(pinned)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_cfg() -> SpLIPConfig:
    return SpLIPConfig(clip_model="tiny", pretrained="")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    """The seed-0 tiny SpLIP (32 px, D = 64), random init, eval mode. Do not mutate it: build your own."""
    return build_model(tiny_cfg).eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    """`tiny_model` saved as a checkpoint dir (which load_engine also opens, torch backend only)."""
    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def traced(tiny_model):
    """export_tower with a cache: tracing dominates export time, and every tiny model exported in
    the tests is `tiny_model`, so each (modality, opset, attention) is traced once. Returns fresh
    copies, since precision lowering and the tamper tests edit graphs."""
    import onnx

    from splip_engine.export.graph import export_tower

    cache = {}

    def cached_export_tower(model, modality, opset=23, attention="contrib"):
        key = (modality, opset, attention)
        if key not in cache:
            cache[key] = export_tower(tiny_model, modality, opset=opset, attention=attention)
        copy = onnx.ModelProto()
        copy.CopyFrom(cache[key])
        return copy

    return cached_export_tower


@pytest.fixture
def cached_tracing(monkeypatch, traced):
    """Route export_engines' tracing through the session cache (for `tiny_model` only)."""
    from splip_engine.export import exporter

    monkeypatch.setattr(exporter, "export_tower", traced)


@pytest.fixture(scope="session")
def tiny_engine_dir(tmp_path_factory, tiny_model, traced):
    """The fp32 engine dir of `tiny_model` (sketch.onnx, photo.onnx, checkpoint/, manifest.json),
    exported once for the whole session. Read-only: copy it before damaging it."""
    from splip_engine.export import exporter

    out = tmp_path_factory.mktemp("engines") / "tiny-fp32"
    original = exporter.export_tower
    exporter.export_tower = traced
    try:
        report = exporter.export_engines(tiny_model, out)
    finally:
        exporter.export_tower = original
    assert report, report.errors
    return out


@pytest.fixture(scope="session")
def tiny_ort_encoder(tiny_engine_dir):
    """`load_engine(tiny_engine_dir)` with ONNX Runtime on CPU: the Python API every entry point is compared with."""
    from splip_engine.runtime import load_engine

    with load_engine(tiny_engine_dir, backend="onnxruntime", device="cpu") as opened:
        yield opened


@pytest.fixture(scope="session")
def tiny_gallery_index_dir(tiny_ort_encoder, tmp_path_factory):
    """A saved flat index of GALLERY_SIZE seeded random unit vectors, ids `photo-000`.., tied to
    `tiny_ort_encoder`'s engine; well-separated scores, so the top-k order is stable under the
    float noise of batched vs single embedding."""
    from splip_engine.index import GalleryIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((GALLERY_SIZE, tiny_ort_encoder.embedding_dim)).astype(np.float32)  # (G, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    engine = {"engine_hash": tiny_ort_encoder.manifest["engine_hash"], "embedding_dim": tiny_ort_encoder.embedding_dim}
    return GalleryIndex.build(vectors, [f"photo-{i:03d}" for i in range(GALLERY_SIZE)], "flat",
                              engine_info=engine).save(tmp_path_factory.mktemp("gallery") / "index")


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    """The synthetic SBIR set: 6 classes x 6 sketch/photo pairs at 32 px, 2 classes unseen.
    Read-only: copy it before changing files."""
    from splip_engine.data.mini import make_mini_dataset

    return make_mini_dataset(tmp_path_factory.mktemp("mini") / "ds", classes=6, per_class=6, size=32)
