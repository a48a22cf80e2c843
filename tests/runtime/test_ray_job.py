"""The embedding job on a local Ray cluster writes the same store as the local job."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from splip_engine.index import open_store
from splip_engine.runtime import load_engine
from splip_engine.runtime.embed_job import run_embed

from data.imagefactory import make_gallery

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is not installed (pip install 'splip-engine[distributed]')")]


def test_ray_job_writes_the_same_store_as_the_local_job(tiny_checkpoint, tmp_path):
    import ray

    from splip_engine.runtime.ray_job import run_embed_ray

    bad = make_gallery(tmp_path / "gallery", 24)
    local = run_embed(load_engine(tiny_checkpoint, backend="torch"), tmp_path / "gallery", tmp_path / "local",
                      batch_size=8, workers=0, shard_size=10, progress=False)
    try:
        remote = run_embed_ray(tiny_checkpoint, tmp_path / "gallery", tmp_path / "ray", backend="torch", batch_size=8,
                               num_actors=2, shard_size=10, progress=False)
    finally:
        ray.shutdown()
    assert (remote.embedded, remote.failed) == (local.embedded, local.failed) == (24, len(bad))
    a, b = open_store(tmp_path / "local"), open_store(tmp_path / "ray")
    assert (a.info["dim"], a.info["modality"], a.info["engine"]) == (b.info["dim"], b.info["modality"], b.info["engine"])
    order_a, order_b = np.argsort(a.ids), np.argsort(b.ids)
    assert list(a.ids[order_a]) == list(b.ids[order_b])
    np.testing.assert_array_equal(a.embeddings()[order_a], b.embeddings()[order_b])
    assert sorted(e["path"] for e in a.errors()) == sorted(e["path"] for e in b.errors())
