"""Crash safety: `embed` killed by SIGKILL at random points (several seeds) and resumed; an index
save killed at random points; a disk that fills up mid-shard or mid-save. Each time nothing is
lost or duplicated, no reader ever sees half a file, what was committed still loads, and the error
is one clear line with a non-zero exit code."""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from data.imagefactory import make_gallery
from splip_engine.cli import main
from splip_engine.index import GalleryIndex, StoreWriter, open_store, synthetic_embeddings, synthetic_queries
from splip_engine.runtime.inputs import resolve_inputs

from .killpoints import kill_point, run_killed

N_GOOD = 30  # + 3 bad files (make_gallery): 8 batches of 4, 5 full shards of 6
SHARD = 6
EMBED_SCOPE = ["runtime/embed_job.py", "index/store.py", "io_utils.py"]  # the job, its store, atomic writes
INDEX_SCOPE = ["index/gallery.py", "io_utils.py"]


def _embed_argv(tiny_engine_dir: Path, gallery: Path, out: str) -> list[str]:
    return ["embed", "--engine", str(tiny_engine_dir), "--input", str(gallery), "--out", out, "--batch-size", "4",
            "--shard-size", str(SHARD), "--workers", "0", "--backend", "onnxruntime", "--device", "cpu"]


def _inputs(gallery: Path, bad: list[str]) -> tuple[dict[str, str], list[str]]:
    """({id: path} of the good inputs, the bad inputs' paths)."""
    pairs = dict(resolve_inputs(gallery))
    return {i: p for i, p in pairs.items() if i not in bad}, sorted(pairs[i] for i in bad)


def _error_line(stderr: str) -> str:
    """The one `error:` line a failed command printed last (tqdm's bar may come before it)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


def _assert_no_half_files(store: Path) -> None:
    """Every file under its final name is whole (atomic writes): readers never see half a file."""
    for path in sorted((store / "shards").glob("[!.]*")) if (store / "shards").is_dir() else ():
        if path.suffix == ".npy":
            emb = np.load(path, allow_pickle=False)
            assert emb.ndim == 2 and emb.dtype == np.float16 and len(emb) > 0, path
            meta = path.with_name(path.name.replace("emb-", "meta-").replace(".npy", ".parquet"))
            assert not meta.exists() or pq.read_metadata(meta).num_rows == len(emb), meta
        else:
            pq.read_table(path)
    if (store / "store.json").exists():
        json.loads((store / "store.json").read_text())
    if (store / "errors.jsonl").exists():
        [json.loads(line) for line in (store / "errors.jsonl").read_text().splitlines()]


def _assert_consistent(store: Path, good: dict[str, str], bad: list[str], tiny_ort_encoder) -> int:
    """The store after a crash: loads, holds each row at most once with its own embedding, lists
    only bad inputs as errors. Returns its row count (0 when the crash came before it existed)."""
    _assert_no_half_files(store)
    if not (store / "store.json").exists():  # killed before the store was created: nothing in it
        assert not list(store.glob("shards/*")), list(store.rglob("*"))
        return 0
    opened = open_store(store)
    ids = list(opened.ids)
    assert len(ids) == len(set(ids)) and set(ids) <= set(good)
    assert set(opened.paths) == {good[i] for i in ids}
    if ids:
        np.testing.assert_allclose(opened.embeddings(np.float32), tiny_ort_encoder.embed([good[i] for i in ids], "photo"),
                                   atol=2e-3)  # float16 storage
    assert {e["path"] for e in opened.errors()} <= set(bad)
    return opened.count


def _assert_complete(store: Path, good: dict[str, str], bad: list[str], tiny_ort_encoder) -> None:
    """Every good input exactly once with its embedding, every bad one listed once, no leftovers."""
    opened = open_store(store)
    assert sorted(opened.ids) == sorted(good)  # none lost, none duplicated
    assert sorted(e["path"] for e in opened.errors()) == bad
    np.testing.assert_allclose(opened.embeddings(np.float32), tiny_ort_encoder.embed([good[i] for i in opened.ids], "photo"),
                               atol=2e-3)
    assert not list(store.rglob("*.tmp"))
    committed = {f"{kind}-{s:05d}.{ext}" for s in range(opened.info["counts"]["shards"])
                 for kind, ext in (("emb", "npy"), ("meta", "parquet"))}
    assert {p.name for p in (store / "shards").iterdir()} == committed  # uncommitted leftovers were removed


# ------------------------------------------------------------------ SIGKILL
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_embed_sigkilled_at_a_random_point_then_resumed_has_every_good_input_once(seed, tiny_engine_dir, tiny_ort_encoder, tmp_path):
    gallery, store = tmp_path / "gallery", tmp_path / "store"
    good, bad = _inputs(gallery, make_gallery(gallery, N_GOOD, seed=seed))
    argv = _embed_argv(tiny_engine_dir, gallery, "{out}")
    proc = run_killed("cli", [argv, str(store)], float(np.random.default_rng(seed).uniform()), EMBED_SCOPE)
    print(f"seed {seed}: {kill_point(proc)}")
    partial = _assert_consistent(store, good, bad, tiny_ort_encoder)
    assert partial < len(good), f"{kill_point(proc)}: the kill came after the job, resume was not tested"
    resumed = CliRunner().invoke(main, [a.replace("{out}", str(store)) for a in argv])
    assert resumed.exit_code == 0, resumed.output
    assert f"embedded {len(good) - partial} images" in resumed.stdout
    _assert_complete(store, good, bad, tiny_ort_encoder)


def _flat(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    return synthetic_embeddings(n, 32, 20, seed=seed)[0], [f"s{seed}-{i}" for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_an_index_save_sigkilled_at_a_random_point_leaves_a_whole_index(seed, tmp_path):
    """Killed anywhere in `save` over a good index: the dir loads and searches exactly as the old
    index (or, killed after the commit, as the new one) -- never a broken mix."""
    directory = tmp_path / "index"
    (old_emb, old_ids), (new_emb, new_ids) = _flat(300, seed=1), _flat(500, seed=2)
    old = GalleryIndex.build(old_emb, old_ids, "flat")
    old.save(directory)
    np.savez(tmp_path / "new.npz", embeddings=new_emb, ids=np.array(new_ids))
    proc = run_killed("index-save", [str(tmp_path / "new.npz"), str(directory)],
                      float(np.random.default_rng(100 + seed).uniform()), INDEX_SCOPE)
    loaded = GalleryIndex.load(directory)
    reference = old if loaded.count == len(old_ids) else GalleryIndex.build(new_emb, new_ids, "flat")
    print(f"seed {seed}: {kill_point(proc)}, left the {'old' if reference is old else 'new'} index")
    queries = synthetic_queries(16, 32, 20, seed=1)[0]
    scores, ids = loaded.search(queries, 10)
    ref_scores, ref_ids = reference.search(queries, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    old.save(directory)  # the next save clears whatever the killed one left
    assert sorted(p.name.split("-")[0] for p in directory.iterdir()) == ["ids", "index", "index.json"]


# ------------------------------------------------------------------ full disk
class _FullDisk:
    """The disk fills up at the `occurrence`-th atomic write of a file whose name starts with
    `name`: that write fails with ENOSPC (after writing half its bytes, if `mid_write`, for a
    shard's embeddings), and so does every later write, as on a real full disk."""

    def __init__(self, monkeypatch, name: str, occurrence: int = 1, mid_write: bool = False):
        from splip_engine.index import store

        self.full, self._seen = False, 0
        real_fsync, real_save_npy = os.fsync, store._save_npy

        def hits(path: str) -> bool:
            if not self.full and os.path.basename(path).startswith(f".{name}"):
                self._seen += 1
                self.full = self._seen == occurrence
            return self.full

        def fsync(fd: int) -> None:
            if hits(os.readlink(f"/proc/self/fd/{fd}")):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        def save_npy(path: Path, array: np.ndarray) -> None:
            if mid_write and hits(str(path)):
                real_save_npy(path, array)
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_save_npy(path, array)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(store, "_save_npy", save_npy)


_DISK_FULL = r"the disk is full \(No space left on device\); free disk space \(or write elsewhere\), then run the command again"


@pytest.mark.parametrize("name, occurrence, mid_write", [
    pytest.param("emb-00001.npy", 1, True, id="mid-write-of-shard-1"),
    pytest.param("meta-00001.parquet", 1, False, id="ids-of-shard-1"),
    pytest.param("errors.jsonl", 2, False, id="errors-file"),
    pytest.param("store.json", 3, False, id="commit-record-of-shard-1"),
])
def test_a_full_disk_mid_embed_keeps_the_store_consistent_and_says_so(name, occurrence, mid_write, tiny_engine_dir,
                                                                      tiny_ort_encoder, tmp_path, monkeypatch):
    gallery, store = tmp_path / "gallery", tmp_path / "store"
    good, bad = _inputs(gallery, make_gallery(gallery, N_GOOD))
    argv = _embed_argv(tiny_engine_dir, gallery, str(store))
    with monkeypatch.context() as patch:
        disk = _FullDisk(patch, name, occurrence, mid_write)
        failed = CliRunner().invoke(main, argv)
    assert disk.full, "the simulated full disk was never hit"
    assert failed.exit_code == 2 and isinstance(failed.exception, SystemExit), failed.exc_info
    line = _error_line(failed.stderr)
    assert re.match(rf"error: cannot write {re.escape(str(store))}/\S*{re.escape(name)}: {_DISK_FULL}", line), line
    assert re.search(r"keeps its \d+ committed rows: re-running `splip-engine embed` with the same --out resumes", line)
    assert not list(store.rglob("*.tmp"))  # the failed write left no temp file behind
    assert _assert_consistent(store, good, bad, tiny_ort_encoder) >= SHARD  # what was committed before is kept
    resumed = CliRunner().invoke(main, argv)
    assert resumed.exit_code == 0, resumed.output
    _assert_complete(store, good, bad, tiny_ort_encoder)


@pytest.mark.parametrize("name", ["index-", "ids-", "index.json"])
def test_a_full_disk_during_index_save_keeps_the_previous_index_and_says_so(name, tmp_path, monkeypatch):
    emb, ids = _flat(200, seed=3)
    with StoreWriter(tmp_path / "store", 32, "photo", {"engine_hash": "e1"}, shard_size=64) as writer:
        writer.add(emb, ids, [f"/photos/{i}.jpg" for i in ids])
    command = ["index", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "index")]
    assert CliRunner().invoke(main, [*command, "--kind", "flat"]).exit_code == 0
    queries = synthetic_queries(8, 32, 20, seed=3)[0]
    before = GalleryIndex.load(tmp_path / "index").search(queries, 5)
    with monkeypatch.context() as patch:
        disk = _FullDisk(patch, name)
        failed = CliRunner().invoke(main, [*command, "--kind", "hnsw"])
    assert disk.full
    assert failed.exit_code == 2 and isinstance(failed.exception, SystemExit), failed.exc_info
    line = _error_line(failed.stderr)
    assert re.match(rf"error: cannot write {re.escape(str(tmp_path / 'index'))}/{re.escape(name)}\S*: {_DISK_FULL}$",
                    line), line
    kept = GalleryIndex.load(tmp_path / "index")
    assert kept.kind == "flat"
    for got, expected in zip(kept.search(queries, 5), before):
        np.testing.assert_array_equal(got, expected)
    assert CliRunner().invoke(main, [*command, "--kind", "hnsw"]).exit_code == 0  # with space again
    assert GalleryIndex.load(tmp_path / "index").kind == "hnsw" and len(list((tmp_path / "index").iterdir())) == 3
