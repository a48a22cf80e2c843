"""The embedding job: every input kind gives the same embeddings under the documented ids, bad
records are listed with their shard and key, nothing is stored twice, resume after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.imagefactory import make_gallery
from splip_engine import SpLIPError
from splip_engine.index import open_store
from splip_engine.runtime import inputs, load_engine
from splip_engine.runtime.embed_job import run_embed
from splip_engine.runtime.inputs import list_records
from splip_engine.runtime.pipeline import BatchDecoder

from .shardfactory import (caption, photo_jpegs, quickdraw_line, side_json, write_bytes_parquet, write_folder,
                           write_shards, write_tar)

PHOTOS = photo_jpegs(18, seed=1)
PER_SHARD = 5  # 4 shards: 5 + 5 + 5 + 3


def _by_key(store) -> dict[str, np.ndarray]:
    """{img2dataset key: float16 embedding} of a store, whatever its ids look like."""
    keys = [i.rsplit("/", 1)[-1].removesuffix(".jpg") for i in store.ids]
    return dict(zip(keys, store.embeddings(), strict=True))


def test_embed_writes_every_good_input_once_and_lists_bad_ones(tiny_checkpoint, tmp_path):
    bad = make_gallery(tmp_path / "gallery", 20)
    encoder = load_engine(tiny_checkpoint, backend="torch")
    report = run_embed(encoder, tmp_path / "gallery", tmp_path / "store", batch_size=8, workers=0, shard_size=7,
                       progress=False)
    store = open_store(tmp_path / "store")
    assert report.embedded == 20 and report.failed == 3
    assert sorted(store.ids) == sorted(r.id for r in list_records(tmp_path / "gallery") if r.id not in bad)
    assert sorted(e["id"] for e in store.errors()) == sorted(bad)
    assert all(e["path"] == str(tmp_path / "gallery" / e["id"]) for e in store.errors())
    expected = encoder.embed([str(tmp_path / "gallery" / i) for i in store.ids], "photo")
    np.testing.assert_allclose(store.embeddings(np.float32), expected, atol=2e-3)  # float16 storage
    again = run_embed(encoder, tmp_path / "gallery", tmp_path / "store", workers=0, progress=False)
    assert again.embedded == 0 and again.already_done == 23
    assert open_store(tmp_path / "store").count == 20


@pytest.fixture(scope="module")
def photo_inputs(tmp_path_factory):
    """The same 18 JPEGs as a folder, as 4 tar shards (+ a .txt list of them) and as a parquet of bytes."""
    root = tmp_path_factory.mktemp("inputs")
    shards = write_shards(root / "shards", PHOTOS, PER_SHARD)
    (root / "shards.txt").write_text("".join(f"{s}\n" for s in shards))
    return {"folder": write_folder(root / "folder", PHOTOS), "pattern": f"{root}/shards/{{00000..00003}}.tar",
            "directory": root / "shards", "list": root / "shards.txt",
            "parquet": write_bytes_parquet(root / "photos.parquet", PHOTOS, row_group_size=4)}


@pytest.fixture(scope="module")
def reference(tiny_ort_encoder):
    """The Python API's embeddings of the photos' bytes, by key: (N, D) float32."""
    return dict(zip(PHOTOS, tiny_ort_encoder.embed(list(PHOTOS.values()), "photo"), strict=True))


@pytest.mark.parametrize("spelling", ["folder", "pattern", "directory", "list", "parquet"])
def test_the_same_photos_in_every_input_kind_give_the_same_embeddings_and_documented_ids(
        spelling, photo_inputs, reference, tiny_ort_encoder, tmp_path):
    report = run_embed(tiny_ort_encoder, photo_inputs[spelling], tmp_path / "store", batch_size=4, workers=0,
                       shard_size=7, progress=False)
    store = open_store(tmp_path / "store")
    assert (report.embedded, report.failed, store.count) == (18, 0, 18)
    expected_ids = {"folder": [f"{k}.jpg" for k in PHOTOS], "parquet": list(PHOTOS)}.get(
        spelling, [f"{int(k) // PER_SHARD:05d}/{k}" for k in PHOTOS])
    assert sorted(store.ids) == expected_ids
    got = _by_key(store)
    for key, embedding in reference.items():  # float16 storage of the same pixels' embedding
        np.testing.assert_allclose(got[key].astype(np.float32), embedding, atol=2e-3)
    metadata = store.metadata(["id", "key", "caption", "json"]).to_pylist()
    row = next(m for m in metadata if "000000007" in m["id"])
    if spelling == "folder":
        assert (row["key"], row["caption"], row["json"]) == ("", None, None)
    elif spelling == "parquet":
        assert (row["key"], row["caption"]) == ("000000007", caption("000000007"))
        assert json.loads(row["json"])["url"] == "https://example.com/000000007.jpg"
    else:
        assert (row["key"], row["caption"], row["json"]) == ("000000007", caption("000000007"), side_json("000000007"))


def test_every_kind_stores_bitwise_the_same_float16_rows(photo_inputs, tiny_ort_encoder, tmp_path):
    """One decode function behind every kind: the stored rows do not depend on the container."""
    stores = {}
    for spelling in ("folder", "directory", "parquet"):
        run_embed(tiny_ort_encoder, photo_inputs[spelling], tmp_path / spelling, batch_size=4, workers=0,
                  progress=False)
        stores[spelling] = _by_key(open_store(tmp_path / spelling))
    for key in PHOTOS:
        np.testing.assert_array_equal(stores["folder"][key], stores["directory"][key])
        np.testing.assert_array_equal(stores["folder"][key], stores["parquet"][key])


def test_decode_workers_write_the_same_store_as_decoding_in_process(photo_inputs, tiny_ort_encoder, tmp_path):
    local = run_embed(tiny_ort_encoder, photo_inputs["directory"], tmp_path / "local", batch_size=4, workers=0,
                      progress=False)
    pooled = run_embed(tiny_ort_encoder, photo_inputs["directory"], tmp_path / "pooled", batch_size=4, workers=2,
                       progress=False)
    assert (local.embedded, pooled.embedded) == (18, 18)
    a, b = _by_key(open_store(tmp_path / "local")), _by_key(open_store(tmp_path / "pooled"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert open_store(tmp_path / "pooled").units == {u: "done" for u in open_store(tmp_path / "local").units}


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
    """Shards 00000..00003: a corrupt jpg member, a record with no image, an empty shard, a truncated final shard."""
    root = tmp_path_factory.mktemp("bad")
    keys = list(PHOTOS)
    write_tar(root / "00000.tar", [(f"{keys[0]}.jpg", PHOTOS[keys[0]]), (f"{keys[0]}.txt", b"first"),
                                   ("corrupt.jpg", PHOTOS[keys[1]][:40] + b"\x00" * 400), ("corrupt.txt", b"x"),
                                   ("noimage.txt", b"a caption"), ("noimage.cls", b"7"),
                                   (f"{keys[2]}.jpg", PHOTOS[keys[2]])])
    (root / "00001.tar").write_bytes(b"")
    whole = write_tar(root / "whole", [(f"{k}.jpg", PHOTOS[k]) for k in keys[3:7]]).read_bytes()
    cut = sum(512 + (len(PHOTOS[k]) + 511) // 512 * 512 for k in keys[3:6]) + 512 + 100  # inside keys[6]'s jpg
    (root / "00003.tar").write_bytes(whole[:cut])
    (root / "whole").unlink()
    return root, keys


def test_bad_members_and_shards_are_listed_with_shard_and_key_and_the_rest_stored(bad_shards, tiny_ort_encoder,
                                                                                   reference, tmp_path):
    root, keys = bad_shards
    report = run_embed(tiny_ort_encoder, f"{root}/{{00000..00003}}.tar", tmp_path / "store", batch_size=2,
                       workers=2, shard_size=3, progress=False)
    store = open_store(tmp_path / "store")
    good = [f"00000/{keys[0]}", f"00000/{keys[2]}", *(f"00003/{k}" for k in keys[3:6])]
    assert sorted(store.ids) == good and report.embedded == 5
    got = _by_key(store)
    for key in (keys[0], keys[2], *keys[3:6]):
        np.testing.assert_allclose(got[key].astype(np.float32), reference[key], atol=2e-3)
    errors = {e["id"]: e for e in store.errors()}
    assert sorted(errors) == ["00000/corrupt", "00000/noimage", "00001/", "00002/", f"00003/{keys[6]}"]
    assert errors["00000/corrupt"]["path"] == str(root / "00000.tar") and errors["00000/corrupt"]["key"] == "corrupt"
    assert "corrupt" in errors["00000/corrupt"]["reason"] or "truncated" in errors["00000/corrupt"]["reason"]
    assert "no jpg|jpeg|png|webp member (members: .txt, .cls)" in errors["00000/noimage"]["reason"]
    assert "is empty (0 bytes)" in errors["00001/"]["reason"]
    assert "cannot read shard" in errors["00002/"]["reason"]  # named by the pattern, not on disk
    assert errors[f"00003/{keys[6]}"]["key"] == keys[6] and "truncated" in errors[f"00003/{keys[6]}"]["reason"]
    lines = (tmp_path / "store" / "errors.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in store.errors()]


def test_a_rerun_reads_no_unit_read_whole_before_and_reads_a_shard_that_appeared(photo_inputs, tiny_ort_encoder,
                                                                                 tmp_path, monkeypatch):
    shards = sorted(photo_inputs["directory"].glob("*.tar"))
    pattern = f"{tmp_path}/{{00000..00004}}.tar"
    for shard in shards[:3]:
        (tmp_path / shard.name).write_bytes(shard.read_bytes())
    first = run_embed(tiny_ort_encoder, pattern, tmp_path / "store", batch_size=4, workers=0, progress=False)
    assert (first.embedded, first.failed) == (15, 2)  # 00003, 00004 missing
    read = []
    original = inputs.read_unit
    monkeypatch.setattr("splip_engine.runtime.pipeline.read_unit", lambda unit, options: read.append(unit.name)
                        or original(unit, options))
    (tmp_path / "00003.tar").write_bytes(shards[3].read_bytes())
    second = run_embed(tiny_ort_encoder, pattern, tmp_path / "store", batch_size=4, workers=0, progress=False)
    assert read == ["00003"] and second.units_skipped == 4  # 3 read whole, 00004 recorded missing
    assert (second.embedded, second.failed) == (3, 0)
    assert open_store(tmp_path / "store").count == 18


def test_duplicate_ids_in_the_input_are_listed_not_stored_twice(tiny_ort_encoder, tmp_path):
    keys = list(PHOTOS)[:4]
    table = pa.table({"key": [*keys, keys[1]], "jpg": pa.array([PHOTOS[k] for k in [*keys, keys[2]]], pa.binary())})
    pq.write_table(table, tmp_path / "dup.parquet", row_group_size=2)
    report = run_embed(tiny_ort_encoder, tmp_path / "dup.parquet", tmp_path / "store", batch_size=8, workers=0,
                       progress=False)
    store = open_store(tmp_path / "store")
    assert sorted(store.ids) == keys and report.failed == 1
    assert "is already stored from another record" in store.errors()[0]["reason"]


class _DyingDecoder(BatchDecoder):
    def decode(self, sources, modality, spec):
        os._exit(7)


def test_a_dying_decode_worker_stops_the_job_with_a_message(photo_inputs, tiny_ort_encoder, tmp_path):
    with pytest.raises(SpLIPError, match=r"decode worker splip-decode-\d died \(exit code 7.*re-run the same command"):
        run_embed(tiny_ort_encoder, photo_inputs["directory"], tmp_path / "store", workers=1, progress=False,
                  decoder=_DyingDecoder())


def _kill_when(command: list[str], store, ready, timeout: float = 90) -> None:
    """Start `command`, SIGKILL it as soon as `ready(store.json contents)` holds."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if ready(json.loads((store / "store.json").read_text())):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_mid_run_then_resume_gives_exactly_one_row_per_input(tiny_checkpoint, tmp_path, seed):
    n_good = 600  # far more rows than the kill target, so the job is still running on a fast machine
    bad = make_gallery(tmp_path / "gallery", n_good, seed=seed)
    command = [sys.executable, "-m", "splip_engine", "embed", "--engine", str(tiny_checkpoint), "--input",
               str(tmp_path / "gallery"), "--out", str(tmp_path / "store"), "--batch-size", "4", "--shard-size", "8",
               "--workers", "0", "--backend", "torch"]
    target_rows = 8 * int(np.random.default_rng(seed).integers(1, 6))
    _kill_when(command, tmp_path / "store", lambda info: info["counts"]["rows"] >= target_rows)
    partial = open_store(tmp_path / "store").count if (tmp_path / "store" / "store.json").exists() else 0
    assert partial < n_good, "the kill landed after the job finished; the test did not test resume"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = open_store(tmp_path / "store")
    ids = list(store.ids)
    assert len(ids) == len(set(ids)) == n_good
    assert store.embeddings().shape == (n_good, store.dim)
    assert sorted(e["id"] for e in store.errors()) == sorted(bad)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_in_the_middle_of_a_shard_then_rerun_stores_every_good_record_once(
        workers, tiny_engine_dir, tiny_ort_encoder, tmp_path):
    n_good = 600  # 6 shards: the first one goes partial after 16 of 600 records, so the kill lands mid-run
    photos = photo_jpegs(n_good, seed=2)
    shards = write_shards(tmp_path / "shards", photos, per_shard=100)
    (tmp_path / "shards" / "00006.tar").write_bytes(b"")  # an empty shard, listed on both runs once
    command = [sys.executable, "-m", "splip_engine", "embed", "--engine", str(tiny_engine_dir), "--input",
               str(tmp_path / "shards"), "--out", str(tmp_path / "store"), "--batch-size", "4", "--shard-size", "16",
               "--workers", str(workers), "--backend", "onnxruntime", "--device", "cpu"]
    _kill_when(command, tmp_path / "store", lambda info: "partial" in info["units"].values())  # mid-shard
    killed = open_store(tmp_path / "store")
    assert 0 < killed.count < n_good and "partial" in killed.units.values()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    store = open_store(tmp_path / "store")
    ids = list(store.ids)
    assert len(ids) == len(set(ids)) == n_good  # every good record exactly once
    assert sorted(ids) == sorted(f"{int(k) // 100:05d}/{k}" for k in photos)
    assert [e["id"] for e in store.errors()] == ["00006/"]
    assert set(store.units.values()) == {"done"} and len(store.units) == len(shards) + 1
    expected = tiny_ort_encoder.embed([photos[i.split("/")[1]] for i in ids], "photo")
    np.testing.assert_allclose(store.embeddings(np.float32), expected, atol=2e-3)


class _CrashingEncoder:
    """`encoder`, whose embed_pixels raises after `batches` calls: a job that crashes mid-unit."""

    def __init__(self, encoder, batches: int):
        self._encoder, self._left = encoder, batches

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def embed_pixels(self, pixels, modality):
        if self._left == 0:
            raise RuntimeError("crash mid-unit")
        self._left -= 1
        return self._encoder.embed_pixels(pixels, modality)


def _one_unit_inputs(root) -> dict[str, tuple[str, str, dict[str, bytes | str]]]:
    """{kind: (input path, modality, {id: the record's bytes or ndjson line})}, each input a single unit of 12."""
    photos = photo_jpegs(12, seed=5)
    [shard] = write_shards(root / "shards", photos, per_shard=12)
    parquet = write_bytes_parquet(root / "photos.parquet", photos, row_group_size=12)
    lines = {str(5000 + i): quickdraw_line(str(5000 + i)) for i in range(12)}
    (root / "cats.ndjson").write_text("".join(f"{line}\n" for line in lines.values()))
    return {"tar": (str(shard), "photo", {f"00000/{k}": v for k, v in photos.items()}),
            "parquet": (str(parquet), "photo", photos),
            "ndjson": (str(root / "cats.ndjson"), "sketch", lines)}


@pytest.mark.parametrize("kind", ["tar", "parquet", "ndjson"])
def test_a_half_read_unit_is_resumed_with_every_record_once(kind, tiny_ort_encoder, tmp_path):
    source, modality, records = _one_unit_inputs(tmp_path)[kind]
    store = tmp_path / "store"
    options = dict(modality=modality, batch_size=4, shard_size=4, workers=0, progress=False)
    with pytest.raises(RuntimeError, match="crash mid-unit"):
        run_embed(_CrashingEncoder(tiny_ort_encoder, batches=2), source, store, **options)
    half = open_store(store)
    assert half.count == 8 and list(half.units.values()) == ["partial"]  # 2 of the unit's 3 batches committed
    report = run_embed(tiny_ort_encoder, source, store, **options)
    assert (report.embedded, report.failed, report.units_skipped) == (4, 0, 0)  # the stored 8 are not duplicates
    resumed = open_store(store)
    assert sorted(resumed.ids) == sorted(records) and resumed.errors() == []
    assert list(resumed.units.values()) == ["done"]
    if kind != "ndjson":  # the photos' own embeddings, each once (float16 storage)
        expected = tiny_ort_encoder.embed([records[i] for i in resumed.ids], modality)
        np.testing.assert_allclose(resumed.embeddings(np.float32), expected, atol=2e-3)
