"""The embedding job on a local Ray cluster writes the same store as the local job, over a folder
and over tar shards (bad members and shards included), and resumes the same way."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from data.imagefactory import make_gallery
from splip_engine.index import open_store
from splip_engine.runtime import load_engine
from splip_engine.runtime.embed_job import run_embed

from .shardfactory import photo_jpegs, write_shards, write_tar

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is not installed (pip install 'splip-engine[distributed]')")]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    yield
    ray.shutdown()


def _assert_same_store(local, remote) -> None:
    a, b = open_store(local), open_store(remote)
    assert (a.info["dim"], a.info["modality"], a.info["engine"]) == (b.info["dim"], b.info["modality"], b.info["engine"])
    order_a, order_b = np.argsort(a.ids), np.argsort(b.ids)
    assert list(a.ids[order_a]) == list(b.ids[order_b])
    np.testing.assert_array_equal(a.embeddings()[order_a], b.embeddings()[order_b])
    columns = ["id", "path", "key", "caption", "json"]
    assert sorted(map(tuple, (r.values() for r in a.metadata(columns).to_pylist()))) == \
        sorted(map(tuple, (r.values() for r in b.metadata(columns).to_pylist())))
    assert sorted(map(sorted, (e.items() for e in a.errors()))) == sorted(map(sorted, (e.items() for e in b.errors())))
    assert a.units == b.units


def test_ray_job_writes_the_same_store_as_the_local_job(ray_cluster, tiny_checkpoint, tmp_path):
    from splip_engine.runtime.ray_job import run_embed_ray

    bad = make_gallery(tmp_path / "gallery", 24)
    local = run_embed(load_engine(tiny_checkpoint, backend="torch"), tmp_path / "gallery", tmp_path / "local",
                      batch_size=8, workers=0, shard_size=10, progress=False)
    remote = run_embed_ray(tiny_checkpoint, tmp_path / "gallery", tmp_path / "ray", backend="torch", batch_size=8,
                           num_actors=2, shard_size=10, progress=False)
    assert (remote.embedded, remote.failed) == (local.embedded, local.failed) == (24, len(bad))
    _assert_same_store(tmp_path / "local", tmp_path / "ray")


def test_ray_over_tar_shards_writes_the_same_store_as_the_local_job_and_resumes(ray_cluster, tiny_engine_dir,
                                                                               tiny_ort_encoder, tmp_path):
    from splip_engine.runtime.ray_job import run_embed_ray

    photos = photo_jpegs(40, seed=3)
    shards = write_shards(tmp_path / "shards", photos, per_shard=12)  # 00000..00003
    good = shards[0].read_bytes()
    write_tar(tmp_path / "shards" / "00004.tar", [("a.jpg", b"corrupt jpeg bytes"), ("b.txt", b"no image")])
    (tmp_path / "shards" / "00005.tar").write_bytes(b"")
    (tmp_path / "shards" / "00006.tar").write_bytes(good[: len(good) // 2])  # a truncated final shard
    source = f"{tmp_path}/shards/{{00000..00006}}.tar"
    local = run_embed(tiny_ort_encoder, source, tmp_path / "local", batch_size=8, workers=0, shard_size=16,
                      progress=False)
    remote = run_embed_ray(tiny_engine_dir, source, tmp_path / "ray", backend="onnxruntime", batch_size=8,
                           num_actors=2, shard_size=16, progress=False)
    assert (remote.embedded, remote.failed) == (local.embedded, local.failed)
    assert local.embedded > 40 and local.failed >= 4  # 00006 repeats part of 00000 under its own name
    _assert_same_store(tmp_path / "local", tmp_path / "ray")
    again = run_embed_ray(tiny_engine_dir, source, tmp_path / "ray", backend="onnxruntime", batch_size=8,
                          num_actors=2, shard_size=16, progress=False)
    assert (again.embedded, again.failed, again.units_skipped) == (0, 0, 7)
