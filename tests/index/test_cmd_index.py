"""`splip-engine index` on a small store, through click's test runner."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.index import GalleryIndex, StoreWriter, synthetic_embeddings, synthetic_queries

DIM = 16


@pytest.fixture
def store(tmp_path):
    emb = synthetic_embeddings(500, DIM, n_clusters=20)[0]
    ids = [f"p{i}" for i in range(len(emb))]
    with StoreWriter(tmp_path / "store", DIM, "photo", {"engine_hash": "e1"}, shard_size=128) as writer:
        writer.add(emb, ids, [f"/photos/{i}.jpg" for i in ids])
    return tmp_path / "store"


def _invoke(*args: str):
    return CliRunner().invoke(main, ["index", *args], catch_exceptions=False)


def test_index_builds_saves_and_reports(store, tmp_path):
    result = _invoke("--store", str(store), "--out", str(tmp_path / "idx"))
    assert result.exit_code == 0, result.output
    assert "built flat index of 500 x 16 embeddings" in result.output
    index = GalleryIndex.load(tmp_path / "idx")
    assert (index.kind, len(index), index.info["engine"]) == ("flat", 500, {"engine_hash": "e1"})
    assert index.path_of("p7") == "/photos/p7.jpg"


def test_index_reports_recall_on_eval_queries(store, tmp_path):
    np.save(tmp_path / "q.npy", synthetic_queries(40, DIM, n_clusters=20)[0])
    result = _invoke("--store", str(store), "--out", str(tmp_path / "idx"), "--kind", "hnsw",
                     "--eval-queries", str(tmp_path / "q.npy"), "-k", "10")
    assert result.exit_code == 0, result.output
    assert "built hnsw index of 500 x 16" in result.output
    assert "recall@10 vs exact flat on 20 queries: " in result.output  # held-out half
    recall = float(result.output.split("queries: ")[1].split()[0])
    assert 0.95 <= recall <= 1.0 and "BELOW the target" not in result.output


def test_index_reports_the_held_out_halfs_recall_not_the_tuning_halfs(tmp_path):
    from splip_engine.index import open_store
    from splip_engine.index.recall import recall_at_k

    emb = synthetic_embeddings(2000, DIM, n_clusters=20)[0]
    ids = [f"p{i}" for i in range(len(emb))]
    with StoreWriter(tmp_path / "store", DIM, "photo", {"engine_hash": "e1"}, shard_size=1024) as writer:
        writer.add(emb, ids, ids)
    queries = synthetic_queries(40, DIM, n_clusters=20)[0]
    np.save(tmp_path / "q.npy", queries)
    result = _invoke("--store", str(tmp_path / "store"), "--out", str(tmp_path / "idx"), "--kind", "hnsw",
                     "--eval-queries", str(tmp_path / "q.npy"), "-k", "10", "--target-recall", "0.8")
    assert result.exit_code == 0, result.output
    reported = float(result.output.split("queries: ")[1].split()[0])
    index, exact = GalleryIndex.load(tmp_path / "idx"), GalleryIndex.build_from_store(open_store(tmp_path / "store"), "flat")
    held_out, tuning = recall_at_k(index, exact, queries[1::2], 10), recall_at_k(index, exact, queries[0::2], 10)
    assert held_out != tuning  # a low target leaves recall unsaturated, so the halves tell apart (0.91 vs 0.88 here)
    assert reported == pytest.approx(held_out, abs=5e-5)  # printed with 4 decimals


def test_index_refuses_a_missing_store_and_bad_queries(store, tmp_path):
    result = _invoke("--store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "idx"))
    assert result.exit_code == 2 and "is not an embedding store" in result.output
    np.save(tmp_path / "q.npy", np.zeros(DIM, np.float32))
    result = _invoke("--store", str(store), "--out", str(tmp_path / "idx"), "--eval-queries", str(tmp_path / "q.npy"))
    assert result.exit_code == 2 and "need a non-empty (Q, D) float array" in result.output
    np.save(tmp_path / "q.npy", np.zeros((3, DIM + 1), np.float32))
    result = _invoke("--store", str(store), "--out", str(tmp_path / "idx"), "--eval-queries", str(tmp_path / "q.npy"))
    assert result.exit_code == 2 and "eval queries have shape (3, 17), the store holds dim 16" in result.output


def test_index_help_has_an_example():
    result = CliRunner().invoke(main, ["index", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--eval-queries" in result.output


def test_index_update_adds_and_removes_as_the_next_version(store, tmp_path):
    assert _invoke("--store", str(store), "--out", str(tmp_path / "idx")).exit_code == 0
    emb = synthetic_embeddings(600, DIM, n_clusters=20)[0]
    ids = [f"p{i}" for i in range(50, 600)]  # p0..p49 deleted, p500..p599 new
    with StoreWriter(tmp_path / "store2", DIM, "photo", {"engine_hash": "e1"}) as writer:
        writer.add(emb[50:], ids, [f"/photos/{i}.jpg" for i in ids])
    result = _invoke("--update", "--store", str(tmp_path / "store2"), "--index", str(tmp_path / "idx"))
    assert result.exit_code == 0, result.output
    assert f"updated flat index {tmp_path / 'idx'} to version 2 in place: +100 added, -50 removed, 550 rows" in result.output
    index = GalleryIndex.load(tmp_path / "idx")
    assert list(index.ids) == ids and index.version == 2
    refused = CliRunner().invoke(main, ["index", "--update", "--kind", "hnsw", "--store", str(store), "--index",
                                        str(tmp_path / "idx")])
    assert refused.exit_code == 2 and "--kind apply to a build, not to --update" in refused.output
