"""The embedding store: round trip, crash-safe resume, errors file, refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from splip_engine.errors import SpLIPError
from splip_engine.index import StoreWriter, open_store, synthetic_embeddings

DIM = 8
ENGINE = {"engine_hash": "e1", "embedding_dim": DIM}
N_ROWS = 10
SHARD = 4
BATCH = 3


def _gallery(n: int = N_ROWS):
    emb = synthetic_embeddings(n, DIM, n_clusters=5)[0]  # (n, D) float32
    ids = [f"id{i:03d}" for i in range(n)]
    return emb, ids, [f"/gallery/{i}.jpg" for i in ids]


def _run_job(path, emb, ids, paths, **writer_kwargs) -> None:
    """What `embed` does: skip stored ids and failed inputs, add batches plus one error per batch."""
    writer = StoreWriter(path, DIM, "photo", ENGINE, shard_size=SHARD, **writer_kwargs)
    for start in range(0, len(ids), BATCH):
        todo = [i for i in range(start, min(start + BATCH, len(ids))) if not writer.is_done(ids[i])]
        if todo:
            writer.add(emb[todo], [ids[i] for i in todo], [paths[i] for i in todo])
        bad = f"/gallery/bad{start}.png"
        if not writer.is_done(bad):
            writer.add_errors([(bad, "cannot identify image file")])
    writer.close()


def _assert_complete(path, emb, ids, paths) -> None:
    """Every row exactly once, with its own embedding and path; every error exactly once."""
    store = open_store(path)
    assert sorted(store.ids) == ids  # no lost and no duplicated rows
    order = np.argsort(store.ids)
    np.testing.assert_array_equal(store.embeddings()[order], emb.astype(np.float16))
    assert list(store.paths[order]) == paths
    errors = [e["path"] for e in store.errors()]
    assert sorted(errors) == sorted(f"/gallery/bad{s}.png" for s in range(0, len(ids), BATCH))


def test_round_trip_keeps_ids_paths_and_float16_embeddings(tmp_path):
    emb, ids, paths = _gallery()
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        writer.add(emb, ids, paths)
    store = open_store(tmp_path / "s")
    assert (store.count, store.dim, store.modality, store.engine) == (N_ROWS, DIM, "photo", ENGINE)
    assert list(store.ids) == ids and list(store.paths) == paths
    assert store.embeddings().dtype == np.float16
    np.testing.assert_array_equal(store.embeddings(), emb.astype(np.float16))
    np.testing.assert_array_equal(store.embeddings(np.float32), emb.astype(np.float16).astype(np.float32))
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    assert info["dtype"] == "float16" and info["counts"] == {"rows": N_ROWS, "shards": 3, "errors": 0}


def test_iter_shards_streams_rows_in_order(tmp_path):
    emb, ids, paths = _gallery()
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        writer.add(emb, ids, paths)
    shards = list(open_store(tmp_path / "s").iter_shards())
    assert [len(s_ids) for _, s_ids in shards] == [4, 4, 2]
    assert [i for _, s_ids in shards for i in s_ids] == ids
    np.testing.assert_array_equal(np.concatenate([e for e, _ in shards]), emb.astype(np.float16))


@pytest.mark.parametrize("crash_at", range(1, 14))
def test_resume_after_a_crash_at_any_commit_step_loses_and_duplicates_nothing(tmp_path, monkeypatch, crash_at):
    """The job crashes just before its n-th atomic rename (every step of every commit, 13 in all),
    leaving a stray temp file; a re-run finishes the store with each row and error exactly once."""
    emb, ids, paths = _gallery()
    path = tmp_path / "s"
    real_replace, calls = os.replace, []

    class Crash(BaseException):
        pass

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) == crash_at:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(Crash):
        _run_job(path, emb, ids, paths)  # the abandoned writer's lock goes with its file object
    monkeypatch.setattr(os, "replace", real_replace)
    stray = path / "shards" if (path / "shards").is_dir() else path  # as a SIGKILL inside atomic_path leaves
    (stray / ".emb-00009.npy.x1.tmp").write_bytes(b"half a shard")

    if (path / "store.json").exists():
        writer = StoreWriter(path, DIM, "photo", ENGINE, shard_size=SHARD)
        done = {i for i in ids if writer.has_row(i)}
        writer.close()
        assert done == set(ids[:len(done)]) and len(done) % SHARD == 0  # committed shards only
    _run_job(path, emb, ids, paths)
    _assert_complete(path, emb, ids, paths)
    assert not list(path.rglob("*.tmp"))


_KILLED_JOB = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from splip_engine.index.store import StoreWriter
    real_replace, calls = os.replace, []
    def replace(src, dst):  # SIGKILL just before store.json commits the first shard
        calls.append(dst)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    os.replace = replace
    emb = np.load(sys.argv[2])
    writer = StoreWriter(sys.argv[1], emb.shape[1], "photo", {"engine_hash": "e1", "embedding_dim": 8}, shard_size=4)
    writer.add_errors([("/gallery/bad0.png", "cannot identify image file")])
    writer.add(emb[:6], [f"id{i:03d}" for i in range(6)], [f"/gallery/id{i:03d}.jpg" for i in range(6)])
""")


@pytest.mark.slow
def test_resume_after_sigkill_mid_commit(tmp_path):
    """A real SIGKILL between writing a shard and committing it: the orphan shard files and the
    temp store.json are ignored by readers, removed by the next writer, and nothing is lost."""
    emb, ids, paths = _gallery()
    np.save(tmp_path / "emb.npy", emb)
    path = tmp_path / "s"
    child = subprocess.run([sys.executable, "-c", _KILLED_JOB, str(path), str(tmp_path / "emb.npy")],
                           capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (path / "shards" / "emb-00000.npy").exists() and list(path.glob(".store.json.*.tmp"))
    assert open_store(path).count == 0 and open_store(path).errors() == []  # nothing was committed
    _run_job(path, emb, ids, paths)
    _assert_complete(path, emb, ids, paths)
    assert not list(path.rglob("*.tmp"))


def test_errors_are_listed_once_and_not_retried_unless_asked(tmp_path):
    emb, ids, paths = _gallery()
    path = tmp_path / "s"
    with StoreWriter(path, DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        writer.add(emb[:2], ids[:2], paths[:2])
        writer.add_errors([("/g/a.txt", "not an image"), ("/g/b.png", "truncated"), ("/g/a.txt", "not an image")])
    assert open_store(path).errors() == [{"id": "/g/a.txt", "path": "/g/a.txt", "reason": "not an image"},
                                         {"id": "/g/b.png", "path": "/g/b.png", "reason": "truncated"}]
    with StoreWriter(path, DIM, "photo", ENGINE) as writer:
        assert writer.has_error("/g/a.txt") and writer.is_done("/g/b.png")  # a resumed job skips them
        writer.add_errors([("/g/b.png", "truncated")])
    assert len(open_store(path).errors()) == 2
    with StoreWriter(path, DIM, "photo", ENGINE, retry_errors=True) as writer:
        assert not writer.has_error("/g/a.txt") and not writer.has_error("/g/b.png")
        writer.add_errors([("/g/b.png", "truncated")])
    assert open_store(path).errors() == [{"id": "/g/b.png", "path": "/g/b.png", "reason": "truncated"}]


@pytest.mark.parametrize("change", [{"dim": 16}, {"engine_info": {"engine_hash": "other"}}, {"modality": "sketch"}])
def test_a_store_of_another_engine_is_refused(tmp_path, change):
    emb, ids, paths = _gallery()
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE) as writer:
        writer.add(emb, ids, paths)
    kwargs = {"dim": DIM, "modality": "photo", "engine_info": ENGINE, **change}
    with pytest.raises(SpLIPError, match="written by another engine: .* use a new --out"):
        StoreWriter(tmp_path / "s", **kwargs)


def test_a_second_writer_is_refused_while_one_is_open(tmp_path):
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE), \
            pytest.raises(SpLIPError, match="being written by another process"):
        StoreWriter(tmp_path / "s", DIM, "photo", ENGINE)
    StoreWriter(tmp_path / "s", DIM, "photo", ENGINE).close()  # released on close


def test_add_refuses_bad_rows(tmp_path):
    emb, ids, paths = _gallery()
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE) as writer:
        writer.add(emb[:2], ids[:2], paths[:2])
        with pytest.raises(SpLIPError, match="id 'id001' is already in store"):
            writer.add(emb[2:4], [ids[2], ids[1]], paths[2:4])
        with pytest.raises(SpLIPError, match=r"shape \(2, 4\), the store holds \(n, 8\)"):
            writer.add(emb[2:4, :4], ids[2:4], paths[2:4])
        with pytest.raises(SpLIPError, match="2 embeddings, 1 ids and 2 paths"):
            writer.add(emb[2:4], ids[2:3], paths[2:4])
        nan = emb[2:3].copy()
        nan[0, 0] = np.nan
        with pytest.raises(SpLIPError, match="embedding of id 'id002' is not finite"):
            writer.add(nan, ids[2:3], paths[2:3])
    assert list(open_store(tmp_path / "s").ids) == ids[:2]


def test_open_store_refuses_missing_damaged_and_newer_stores(tmp_path):
    with pytest.raises(SpLIPError, match="is not an embedding store"):
        open_store(tmp_path / "nowhere")
    emb, ids, paths = _gallery()
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        writer.add(emb, ids, paths)
    shard = tmp_path / "s" / "shards" / "emb-00001.npy"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(SpLIPError, match="store .* is damaged: shard 1"):
        open_store(tmp_path / "s")
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    (tmp_path / "s" / "store.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(SpLIPError, match="format 99, newer than"):
        open_store(tmp_path / "s")
    (tmp_path / "s" / "store.json").write_text("{not json")
    with pytest.raises(SpLIPError, match="damaged: store.json is unreadable"):
        open_store(tmp_path / "s")


def test_a_directory_that_is_not_a_store_is_not_written_into(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(SpLIPError, match="exists and is not an embedding store"):
        StoreWriter(tmp_path / "photos", DIM, "photo", ENGINE)


def test_metadata_columns_round_trip_and_are_read_one_at_a_time(tmp_path):
    emb, ids, paths = _gallery()
    captions = [f"caption {i}" if i != "id003" else None for i in ids]
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        writer.add(emb[:5], ids[:5], paths[:5], metadata={"key": ids[:5], "caption": captions[:5]})
        writer.add(emb[5:], ids[5:], paths[5:])  # no metadata: nulls
        with pytest.raises(SpLIPError, match=r"metadata columns \['colour'\] are not in"):
            writer.add(emb[:1], ["x"], ["y"], metadata={"colour": ["red"]})
    store = open_store(tmp_path / "s")
    assert store.column("caption").to_pylist() == captions[:5] + [None] * 5
    assert store.column("key").to_pylist() == ids[:5] + [None] * 5
    assert store.metadata(["id", "json"]).column_names == ["id", "json"]
    with pytest.raises(SpLIPError, match="a store has no column 'colour'"):
        store.column("colour")


def test_a_unit_is_done_once_all_its_rows_are_committed_and_partial_before(tmp_path):
    emb, ids, paths = _gallery()
    writer = StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, shard_size=SHARD)
    writer.add(emb[:3], ids[:3], paths[:3], unit="u1")
    writer.finish_unit("u1")  # its rows are buffered, not committed: not done yet
    writer.add(emb[3:6], ids[3:6], paths[3:6], unit="u2")  # commits rows 0-3: u1 done, u2 partial
    assert (writer.unit_state("u1"), writer.unit_state("u2")) == ("done", "partial")
    writer.finish_unit("u2")
    writer.add_errors([{"id": "u3/", "path": "/s/u3.tar", "key": "", "reason": "empty"}])
    writer.finish_unit("u3")  # a unit of errors only
    writer.close()
    assert open_store(tmp_path / "s").units == {"u1": "done", "u2": "done", "u3": "done"}
    with StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, retry_errors=True) as again:
        assert again.unit_state("u1") == "partial"  # retrying errors reads every unit again
    assert open_store(tmp_path / "s").errors() == []


def test_an_errors_only_commit_does_not_mark_a_unit_done_whose_rows_are_still_buffered(tmp_path):
    emb, ids, paths = _gallery()
    writer = StoreWriter(tmp_path / "s", DIM, "photo", ENGINE, shard_size=SHARD)
    writer.add(emb[:3], ids[:3], paths[:3], unit="u1")
    writer.finish_unit("u1")  # every record of u1 added; its 3 rows are buffered (shard of 4 not full)
    writer.add_errors([{"id": f"bad{i}", "path": f"/b/{i}", "reason": "x"} for i in range(SHARD)])  # commits errors only
    committed = open_store(tmp_path / "s")  # what a SIGKILL now would leave
    assert (committed.count, len(committed.errors())) == (0, SHARD)
    assert committed.units.get("u1") != "done"  # else a resumed job would skip u1 and lose its 3 rows
    writer.close()
    assert open_store(tmp_path / "s").units == {"u1": "done"} and open_store(tmp_path / "s").count == 3


def test_a_format_1_store_is_read_and_resumed(tmp_path):
    emb, ids, paths = _gallery()
    path = tmp_path / "s"
    with StoreWriter(path, DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        writer.add(emb[:4], ids[:4], paths[:4])
        writer.add_errors([("/g/bad.png", "truncated")])
    import pyarrow.parquet as pq

    meta = path / "shards" / "meta-00000.parquet"
    pq.write_table(pq.read_table(meta).drop_columns(["key", "caption", "json"]), meta)  # what format 1 wrote
    info = json.loads((path / "store.json").read_text())
    del info["units"]
    (path / "store.json").write_text(json.dumps({**info, "format_version": 1}))
    (path / "errors.jsonl").write_text(json.dumps({"path": "/g/bad.png", "reason": "truncated"}) + "\n")
    with StoreWriter(path, DIM, "photo", ENGINE, shard_size=SHARD) as writer:
        assert writer.has_row(ids[0]) and writer.has_error("/g/bad.png")
        writer.add(emb[4:], ids[4:], paths[4:], metadata={"key": ids[4:]})
    store = open_store(path)
    assert list(store.ids) == ids and store.info["format_version"] == 2
    assert store.column("key").to_pylist() == [None] * 4 + ids[4:]
    assert store.errors() == [{"id": "/g/bad.png", "path": "/g/bad.png", "reason": "truncated"}]
