"""StoreMetadata: records by row and by id, sources, unknown ids, collisions and a multi-shard store."""
import json

import numpy as np
import pytest

from splip_engine.index.metadata import Source, StoreMetadata
from splip_engine.index.store import StoreWriter


@pytest.fixture
def store_dir(tmp_path):
    """A 3-shard store of 7 rows: image files, a tar shard's members and rows without captions."""
    root = tmp_path / "store"
    with StoreWriter(root, dim=4, modality="photo", engine_info={"engine_hash": "x"}, shard_size=3) as writer:
        emb = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2]]
        ids = ["a.jpg", "b.jpg", "shard0/000001", "shard0/000002", "p1", "p2", "p3"]
        paths = ["/d/a.jpg", "/d/b.jpg", "/s/shard0.tar", "/s/shard0.tar", "/x.parquet", "/x.parquet", "/x.parquet"]
        writer.add(emb, ids, paths, metadata={
            "key": ["", "", "000001", "000002", "p1", "p2", "p3"],
            "caption": [None, "a bee", "a cat", None, "dog", "emu", "fox"],
            "json": [None, None, json.dumps({"url": "http://u/1"}), None, "{}", "{}", '{"w": 3}']})
    return root


def test_lookup_by_id_and_row(store_dir):
    meta = StoreMetadata.load(store_dir)
    assert meta.count == 7 and meta.nbytes > 0
    rows = meta.rows_of(["p3", "shard0/000001", "missing", "a.jpg"])
    assert rows.tolist() == [6, 2, -1, 0]
    records = meta.records(rows)
    assert records[0] == {"id": "p3", "path": "/x.parquet", "key": "p3", "caption": "fox", "json": '{"w": 3}'}
    assert records[1]["caption"] == "a cat" and json.loads(records[1]["json"]) == {"url": "http://u/1"}
    assert records[2] is None
    assert records[3] == {"id": "a.jpg", "path": "/d/a.jpg", "key": "", "caption": None, "json": None}
    assert meta.lookup(["b.jpg"])[0]["caption"] == "a bee"


def test_source(store_dir):
    meta = StoreMetadata.load(store_dir)
    assert meta.source("shard0/000002") == Source("/s/shard0.tar", "000002")
    assert meta.source("a.jpg") == Source("/d/a.jpg", "")
    assert meta.source("nope") is None


def test_hash_collision_finds_the_right_row(store_dir, monkeypatch):
    """Every id hashing alike: the lookup still returns each id's own row (and -1 for others)."""
    import builtins

    monkeypatch.setattr(builtins, "hash", lambda _: 7)
    meta = StoreMetadata.load(store_dir)
    assert meta.rows_of(["p2", "a.jpg", "shard0/000002", "zzz"]).tolist() == [5, 0, 3, -1]
