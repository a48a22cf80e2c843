"""The embedding job: store rows, errors file, resume after SIGKILL, input resolution."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splip_engine import SpLIPError
from splip_engine.index import open_store
from splip_engine.runtime import load_engine
from splip_engine.runtime.embed_job import run_embed
from splip_engine.runtime.inputs import resolve_inputs
from splip_engine.runtime.pipeline import iter_pixel_batches

from data.imagefactory import make_gallery


def test_embed_writes_every_good_input_once_and_lists_bad_ones(tiny_checkpoint, tmp_path):
    bad = make_gallery(tmp_path / "gallery", 20)
    encoder = load_engine(tiny_checkpoint, backend="torch")
    report = run_embed(encoder, tmp_path / "gallery", tmp_path / "store", batch_size=8, workers=0, shard_size=7,
                       progress=False)
    store = open_store(tmp_path / "store")
    assert report.embedded == 20 and report.failed == 3
    assert sorted(store.ids) == sorted(i for i, _ in resolve_inputs(tmp_path / "gallery") if i not in bad)
    assert sorted(e["path"].split("gallery/")[1] for e in store.errors()) == sorted(bad)
    expected = encoder.embed([str(tmp_path / "gallery" / i) for i in store.ids], "photo")
    np.testing.assert_allclose(store.embeddings(np.float32), expected, atol=2e-3)  # float16 storage
    again = run_embed(encoder, tmp_path / "gallery", tmp_path / "store", workers=0, progress=False)
    assert again.embedded == 0 and again.already_done == 23
    assert open_store(tmp_path / "store").count == 20


def test_worker_processes_give_the_same_pixels(tiny_checkpoint, tmp_path):
    make_gallery(tmp_path / "g", 9)
    items = resolve_inputs(tmp_path / "g")
    spec = load_engine(tiny_checkpoint, backend="torch").spec
    local = list(iter_pixel_batches(items, "photo", spec, 4, workers=0))
    pooled = list(iter_pixel_batches(items, "photo", spec, 4, workers=2, prefetch=2))
    assert [b.items for b in local] == [b.items for b in pooled]
    for a, b in zip(local, pooled):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert a.errors == b.errors


def test_inputs_from_file_list_and_parquet(tmp_path):
    make_gallery(tmp_path / "g", 4)
    paths = sorted(str(p) for p in (tmp_path / "g").rglob("*.png"))
    (tmp_path / "list.txt").write_text("# comment\n" + "\n".join(paths) + "\n")
    assert [p for _, p in resolve_inputs(tmp_path / "list.txt")] == paths
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(len(paths))], "path": paths}), tmp_path / "t.parquet")
    assert resolve_inputs(tmp_path / "t.parquet")[0] == ("x0", paths[0])
    (tmp_path / "dup.txt").write_text(f"{paths[0]}\n{paths[0]}\n")
    with pytest.raises(SpLIPError, match="lists some ids twice"):
        resolve_inputs(tmp_path / "dup.txt")
    with pytest.raises(SpLIPError, match="does not exist"):
        resolve_inputs(tmp_path / "nothing")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_mid_run_then_resume_gives_exactly_one_row_per_input(tiny_checkpoint, tmp_path, seed):
    n_good = 600  # far more rows than the kill target, so the job is still running on a fast machine
    bad = make_gallery(tmp_path / "gallery", n_good, seed=seed)
    command = [sys.executable, "-m", "splip_engine", "embed", "--engine", str(tiny_checkpoint), "--input",
               str(tmp_path / "gallery"), "--out", str(tmp_path / "store"), "--batch-size", "4", "--shard-size", "8",
               "--workers", "0", "--backend", "torch"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    rng = np.random.default_rng(seed)
    target_shards = int(rng.integers(1, 6))
    while time.monotonic() < deadline and proc.poll() is None:
        shards = list((tmp_path / "store").glob("shards/emb-*.npy"))
        if len(shards) >= target_shards:
            time.sleep(float(rng.uniform(0, 0.05)))  # somewhere inside the next shard
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_store(tmp_path / "store").count if (tmp_path / "store" / "store.json").exists() else 0
    assert partial < n_good, "the kill landed after the job finished; the test did not test resume"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = open_store(tmp_path / "store")
    ids = list(store.ids)
    assert len(ids) == len(set(ids)) == n_good
    assert store.embeddings().shape == (n_good, store.dim)
    assert sorted(e["path"].split("gallery/")[1] for e in store.errors()) == sorted(bad)
