"""GalleryIndex: exact flat search against NumPy, recall of the approximate kinds on sketch-like
queries, save/load (also interrupted), bad input."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import pytest

from splip_engine.errors import SpLIPError
from splip_engine.index import (
    MAX_K,
    GalleryIndex,
    Store,
    StoreWriter,
    build_index,
    open_store,
    recall_at_k,
    synthetic_embeddings,
    synthetic_queries,
    tune_search,
    update_index,
)
from splip_engine.index.kinds import FLAT_MAX_BYTES, IVF_MIN_COUNT, SEARCH_PARAMS, choose_kind

from .numpy_reference import numpy_topk

N, DIM, CLUSTERS, K = 20_000, 64, 200, 100
ENGINE = {"engine_hash": "e1"}


@pytest.fixture(scope="module")
def gallery() -> tuple[np.ndarray, np.ndarray]:
    emb = synthetic_embeddings(N, DIM, CLUSTERS, dtype=np.float16)[0]  # (N, D) float16, as a store holds
    return emb, np.array([f"p{i}" for i in range(N)], dtype=object)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return synthetic_queries(64, DIM, CLUSTERS)[0]  # (Q, D) float32 sketch-like


@pytest.fixture(scope="module")
def indexes(gallery) -> dict[str, GalleryIndex]:
    emb, ids = gallery
    return {kind: GalleryIndex.build(emb, ids, kind, engine_info=ENGINE) for kind in ("flat", "ivfpq", "hnsw")}



def test_flat_search_equals_numpy_brute_force(gallery, queries, indexes):
    emb, ids = gallery
    scores, found = indexes["flat"].search(queries, K)
    ref_scores, ref_rows = numpy_topk(queries, emb, K)
    # the index holds the float16 values themselves: only float32 summation order differs (~1e-7)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    untied = np.abs(np.diff(ref_scores, axis=1, prepend=np.inf, append=-np.inf)) > 1e-5  # (Q, K + 1)
    clear = untied[:, :-1] & untied[:, 1:]  # rank separated from both neighbours: ties aside
    assert clear.mean() > 0.9
    assert (found[clear] == ids[ref_rows][clear]).all()


def test_flat_on_float32_input_is_within_float16_rounding(queries):
    emb = synthetic_embeddings(2000, DIM, CLUSTERS)[0]  # (N, D) float32
    index = GalleryIndex.build(emb, [str(i) for i in range(len(emb))], "flat")
    scores, rows = index.search_positions(queries, 10)
    exact = np.take_along_axis(queries @ emb.T, rows, axis=1)
    # stored as float16: each component off by <= 2^-11 relative, so |score error| <= 2^-11 |q| |g|
    assert np.abs(scores - exact).max() <= 2**-11


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_approximate_kinds_reach_recall_095_on_sketch_queries(queries, indexes, kind):
    assert recall_at_k(indexes[kind], indexes["flat"], queries, K) >= 0.95


def test_recall_counts_the_exact_neighbours_an_index_misses(gallery, queries, indexes):
    """An index over the same ids whose rows holding a third of the true neighbours are negated
    (so they never rank): its recall is the share of true top-k rows it still holds, counted by NumPy."""
    emb, ids = gallery
    _, true_rows = numpy_topk(queries, emb, K)  # (Q, K)
    hidden = np.unique(true_rows[:, ::3])
    degraded = emb.copy()
    degraded[hidden] = -degraded[hidden]
    expected = float(np.mean([np.isin(row, hidden, invert=True).mean() for row in true_rows]))
    assert 0.5 < expected < 0.8
    # float16 ties at rank K may swap a row in or out of a top-k: a few of the Q*K slots at most
    assert recall_at_k(GalleryIndex.build(degraded, ids, "flat"), indexes["flat"], queries, K) == pytest.approx(
        expected, abs=5 / (len(queries) * K))


def test_recall_needs_a_flat_reference(queries, indexes):
    with pytest.raises(SpLIPError, match="against an exact flat index, not hnsw"):
        recall_at_k(indexes["ivfpq"], indexes["hnsw"], queries, K)


@pytest.fixture
def restored(indexes):
    """The module's indexes, with their search parameters put back after the test."""
    saved = {kind: dict(index.info["params"]) for kind, index in indexes.items()}
    yield indexes
    for kind in ("ivfpq", "hnsw"):
        indexes[kind].set_search_params(**{p: saved[kind][p] for p in SEARCH_PARAMS[kind]})


def test_tune_search_picks_the_cheapest_params_reaching_the_target(queries, restored):
    index, exact = restored["ivfpq"], restored["flat"]
    tuned = tune_search(index, exact, queries, K, target_recall=0.95)
    k_factor, nprobe = tuned["params"]["k_factor"], tuned["params"]["nprobe"]
    assert tuned["reached"] and tuned["recall"] >= 0.95 and recall_at_k(index, exact, queries, K) == tuned["recall"]
    assert (index.info["params"]["k_factor"], index.info["params"]["nprobe"]) == (k_factor, nprobe) and nprobe > 1
    index.set_search_params(nprobe=nprobe // 2, k_factor=512)  # fewer lists fall short even re-ranking the most
    assert recall_at_k(index, exact, queries, K) < 0.95
    if k_factor > 4:  # so does the previous re-ranking depth on the same lists
        index.set_search_params(k_factor=k_factor // 2, nprobe=nprobe)
        assert recall_at_k(index, exact, queries, K) < 0.95


def test_tune_search_says_when_no_params_reach_the_target_and_keeps_the_best(queries, restored):
    index, exact = restored["ivfpq"], restored["flat"]
    tuned = tune_search(index, exact, queries, K, target_recall=1.01)  # unreachable
    assert not tuned["reached"] and tuned["recall"] == max(recall for _, recall in tuned["tried"]) < 1.01
    assert recall_at_k(index, exact, queries, K) == tuned["recall"]


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "hnsw"])
def test_save_load_round_trip_gives_identical_results(tmp_path, queries, indexes, kind):
    indexes[kind].save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.info == indexes[kind].info and loaded.info["engine"] == ENGINE
    for a, b in zip(loaded.search(queries, K), indexes[kind].search(queries, K), strict=True):
        np.testing.assert_array_equal(a, b)


def test_search_params_are_saved(tmp_path, restored):
    index = restored["hnsw"]
    index.set_search_params(ef_search=300)
    index.save(tmp_path / "idx")
    assert GalleryIndex.load(tmp_path / "idx").info["params"]["ef_search"] == 300
    with pytest.raises(SpLIPError, match=r"\['nprobe'\] are not search parameters of a hnsw index"):
        index.set_search_params(nprobe=4)


@pytest.mark.parametrize("failing", ["faiss", "ids"])
def test_an_interrupted_save_leaves_the_previous_index_loadable(tmp_path, monkeypatch, queries, indexes, failing):
    import faiss
    import pyarrow.parquet as pq

    indexes["flat"].save(tmp_path / "idx")

    def write_half_then_die(obj, where, *args, **kwargs):
        Path(where).write_bytes(b"partial")
        raise KeyboardInterrupt

    target = (faiss, "write_index") if failing == "faiss" else (pq, "write_table")
    with monkeypatch.context() as patch:
        patch.setattr(*target, write_half_then_die)
        with pytest.raises(KeyboardInterrupt):
            indexes["hnsw"].save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.kind == "flat"
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], indexes["flat"].search(queries, 5)[1])
    indexes["hnsw"].save(tmp_path / "idx")  # a later save replaces it and clears what was left
    assert GalleryIndex.load(tmp_path / "idx").kind == "hnsw"
    assert len([p for p in (tmp_path / "idx").iterdir()]) == 3


def test_load_refuses_missing_damaged_newer_and_foreign_dirs(tmp_path, indexes):
    with pytest.raises(SpLIPError, match="is not a gallery index .*`splip-engine index --store"):
        GalleryIndex.load(tmp_path / "nowhere")
    directory = indexes["flat"].save(tmp_path / "idx")
    data = next(directory.glob("index-*.faiss"))
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(SpLIPError, match="is damaged: index-.* not the size"):
        GalleryIndex.load(directory)
    (directory / "index.json").write_text("[1, 2")
    with pytest.raises(SpLIPError, match="damaged: index.json is unreadable"):
        GalleryIndex.load(directory)
    indexes["flat"].save(directory)
    text = (directory / "index.json").read_text().replace('"format_version": 1', '"format_version": 7')
    (directory / "index.json").write_text(text)
    with pytest.raises(SpLIPError, match="format 7, newer than"):
        GalleryIndex.load(directory)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(SpLIPError, match="exists and is not a gallery index"):
        indexes["flat"].save(tmp_path / "photos")


def test_check_compatible_refuses_another_engine(indexes):
    flat = indexes["flat"]
    flat.check_compatible({"engine_hash": "e1", "embedding_dim": DIM})
    flat.check_compatible({})  # nothing to compare
    with pytest.raises(SpLIPError, match="built with another engine: engine_hash 'e1' .* != 'e2'"):
        flat.check_compatible({"engine_hash": "e2", "embedding_dim": DIM})
    with pytest.raises(SpLIPError, match="built with another engine: embedding_dim 64 .* != 512"):
        flat.check_compatible({"engine_hash": "e1", "embedding_dim": 512})


def test_k_beyond_the_gallery_pads_with_none_and_minus_inf(queries):
    emb = synthetic_embeddings(5, DIM, CLUSTERS)[0]
    for kind in ("flat", "hnsw"):
        scores, ids = GalleryIndex.build(emb, list("abcde"), kind).search(queries[:3], 8)
        assert scores.shape == ids.shape == (3, 8)
        assert sorted(ids[0, :5]) == list("abcde") and list(ids[:, 5:].ravel()) == [None] * 9
        assert np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()


def test_search_batches_of_zero_and_100k_queries(gallery, queries):
    emb, ids = gallery
    small = GalleryIndex.build(emb[:50], ids[:50], "flat")
    scores, found = small.search(np.empty((0, DIM), np.float32), 5)
    assert scores.shape == found.shape == (0, 5) and scores.dtype == np.float32
    many = np.repeat(queries, 1563, axis=0)[:100_000]  # (1e5, D)
    scores, found = small.search(many, 5)
    assert found.shape == (100_000, 5)
    np.testing.assert_array_equal(found[-64:], small.search(many[-64:], 5)[1])


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 2.5, True])
def test_bad_k_is_refused(indexes, queries, k):
    with pytest.raises(SpLIPError, match=f"k={k!r} must be an integer in \\[1, {MAX_K}\\]"):
        indexes["flat"].search(queries, k)


def test_bad_queries_are_refused(indexes, queries):
    flat = indexes["flat"]
    with pytest.raises(SpLIPError, match="queries have dim 32 but the index holds dim 64"):
        flat.search(queries[:, :32], 5)
    with pytest.raises(SpLIPError, match=r"pass one query as queries\[None\]"):
        flat.search(queries[0], 5)
    bad = queries[:3].copy()
    bad[2, 0] = np.nan
    with pytest.raises(SpLIPError, match="query row 2 is not finite"):
        flat.search(bad, 5)
    with pytest.raises(SpLIPError, match="search in smaller batches"):
        flat.search(np.repeat(queries, 100, axis=0), MAX_K)
    with pytest.raises(SpLIPError, match="device='cuda' searches flat indexes only"):
        indexes["hnsw"].search(queries, 5, device="cuda")
    with pytest.raises(SpLIPError, match="device 'tpu' is not 'cpu' or 'cuda'"):
        flat.search(queries, 5, device="tpu")


def test_cuda_search_matches_cpu_or_is_refused_without_a_gpu(indexes, queries):
    import torch

    flat = indexes["flat"]
    if not torch.cuda.is_available():
        with pytest.raises(SpLIPError, match="torch sees no CUDA device; use device='cpu'"):
            flat.search(queries, K, device="cuda")
        return
    scores, rows = flat.search_positions(queries, K, device="cuda")
    cpu_scores, cpu_rows = flat.search_positions(queries, K)
    # the kernel may take the dot in float16 (queries rounded to 2^-11 relative): |error| <= 2^-11
    np.testing.assert_allclose(scores, cpu_scores, atol=2**-11)
    assert np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, cpu_rows, strict=True)]) > 0.99  # ties aside


def test_build_refuses_bad_input(gallery):
    emb, ids = gallery
    small, small_ids = emb[:100], ids[:100]
    with pytest.raises(SpLIPError, match="row 3 has norm 2: .* L2-normalised"):
        GalleryIndex.build(np.concatenate([small[:3], small[3:4] * 2]), small_ids[:4], "flat")
    with pytest.raises(SpLIPError, match="gallery id 'p1' appears more than once"):
        GalleryIndex.build(small[:3], ["p0", "p1", "p1"], "flat")
    with pytest.raises(SpLIPError, match="100 embeddings but 99 ids"):
        GalleryIndex.build(small, small_ids[:99], "flat")
    with pytest.raises(SpLIPError, match="metric 'l2' is not supported"):
        GalleryIndex.build(small, small_ids, "flat", metric="l2")
    with pytest.raises(SpLIPError, match="kind ivfpq needs at least 9984 vectors .* use kind flat"):
        GalleryIndex.build(small, small_ids, "ivfpq")
    with pytest.raises(SpLIPError, match=r"unknown hnsw index parameter\(s\) \['nprobe'\]"):
        GalleryIndex.build(small, small_ids, "hnsw", nprobe=3)
    with pytest.raises(SpLIPError, match="need an explicit kind"):
        GalleryIndex.build(small, small_ids, "auto", nprobe=3)
    with pytest.raises(SpLIPError, match="index kind 'lsh' is not one of"):
        GalleryIndex.build(small, small_ids, "lsh")
    with pytest.raises(SpLIPError, match="cannot build an index over 0 embeddings"):
        GalleryIndex.build(small[:0], [], "flat")


def test_auto_is_flat_up_to_the_limit_then_ivfpq_within_the_memory_budget():
    assert FLAT_MAX_BYTES == 200_000 * 512 * 2  # the limit is bytes scanned per exact query, not a count
    assert choose_kind(200_000, 512)[0] == "flat"
    kind, params = choose_kind(200_001, 512)
    assert kind == "ivfpq" and params["refine"]
    assert choose_kind(1_000_000, 64)[0] == "flat"  # 128 MB: exact and faster than IVF-PQ (RESULTS.md, issue 11)
    assert choose_kind(1_700_000, 64)[0] == "ivfpq"
    kind, params = choose_kind(100_000, 512, memory_budget_bytes=50 << 20)
    assert kind == "ivfpq" and not params["refine"]  # flat (100 MB) does not fit, PQ codes (4 MB) do
    assert choose_kind(1_000_000, 512, memory_budget_bytes=1100 << 20)[1]["refine"]  # 1 GB fp16 + codes
    assert choose_kind(IVF_MIN_COUNT - 1, 512, memory_budget_bytes=1)[0] == "flat"  # too few to train IVF
    with pytest.raises(SpLIPError, match="raise --memory-budget"):
        choose_kind(1_000_000, 512, memory_budget_bytes=1 << 20)


def test_path_of_finds_every_id_by_binary_search_and_none_for_others():
    ids = [f"{shard:05d}/{key:09d}" for shard in (3, 1, 2) for key in (7, 2, 9)]  # not sorted
    paths = [f"/shards/{i.split('/')[0]}.tar" for i in ids]
    emb = np.eye(len(ids), 16, dtype=np.float32)
    index = GalleryIndex.build(emb, ids, "flat", paths=paths)
    assert [index.path_of(i) for i in ids] == paths
    assert index.path_of("00004/000000007") is None and index.path_of("") is None and index.path_of("zzz") is None


# ------------------------------------------------------------------ update (index --update)
UPDATE_N, UPDATE_DIM = 10_000, 32  # ivfpq needs >= IVF_MIN_COUNT rows to train


def _write_store(path: Path, rows: range, emb: np.ndarray, engine=ENGINE) -> Store:
    """A store holding the synthetic rows `rows` (ids p<row>), in row order."""
    with StoreWriter(path, emb.shape[1], "photo", engine, shard_size=4096) as writer:
        writer.add(emb[rows.start:rows.stop], [f"p{i}" for i in rows], [f"/photos/{i}.jpg" for i in rows])
    return open_store(path)


@pytest.fixture(scope="module")
def update_rows() -> np.ndarray:
    return synthetic_embeddings(UPDATE_N + 3000, UPDATE_DIM, 100, dtype=np.float16)[0]  # (N', D)


@pytest.mark.parametrize("kind", ["flat", "ivfpq", pytest.param("hnsw", marks=pytest.mark.slow)])  # hnsw: 2 builds
def test_update_adds_new_rows_and_drops_deleted_ids_in_place_where_the_kind_can(tmp_path, update_rows, kind):
    build_index(_write_store(tmp_path / "v1", range(UPDATE_N), update_rows), tmp_path / "idx", kind)
    store = _write_store(tmp_path / "v2", range(300, UPDATE_N + 200), update_rows)  # p0..p299 gone, 200 new
    report = update_index(store, tmp_path / "idx")
    assert (report["added"], report["removed"], report["count"], report["version"]) == (200, 300, store.count, 2)
    assert report["rebuilt"] == ("a hnsw index cannot remove ids in place" if kind == "hnsw" else None)
    updated = GalleryIndex.load(tmp_path / "idx")
    assert list(updated.ids) == list(store.ids) and updated.version == 2 and updated.path_of("p10100") == "/photos/10100.jpg"
    queries = synthetic_queries(40, UPDATE_DIM, 100)[0]
    exact = GalleryIndex.build_from_store(store, "flat")
    if kind == "flat":  # in place, row for row what a rebuild holds: identical results
        for got, want in zip(updated.search(queries, 20), exact.search(queries, 20), strict=True):
            np.testing.assert_array_equal(got, want)
    else:
        assert recall_at_k(updated, exact, queries, 20) >= 0.95
    new_rows = update_rows[UPDATE_N:UPDATE_N + 200].astype(np.float32)  # each new photo finds itself
    found = updated.search(new_rows, 10)[1]  # (200, 10)
    hit = [f"p{i}" in found[row] for row, i in enumerate(range(UPDATE_N, UPDATE_N + 200))]
    assert all(hit) if kind == "flat" else np.mean(hit) >= 0.95  # approximate: PQ may miss a few
    gone = update_rows[:300].astype(np.float32)
    assert not {f"p{i}" for i in range(300)} & set(updated.search(gone, 10)[1].ravel())


@pytest.mark.slow  # two ivfpq trainings, ~4 s
def test_an_ivfpq_index_grown_past_twice_its_training_rows_is_rebuilt(tmp_path, update_rows):
    build_index(_write_store(tmp_path / "v1", range(10_000), update_rows), tmp_path / "idx", "ivfpq")
    bigger = synthetic_embeddings(20_100, UPDATE_DIM, 100, dtype=np.float16, seed=1)[0]
    report = update_index(_write_store(tmp_path / "v2", range(20_100), bigger), tmp_path / "idx")
    assert report["rebuilt"] == "the gallery grew to 20,100 rows, over 2x the 10,000 its quantizers were trained for"
    assert GalleryIndex.load(tmp_path / "idx").info["trained_count"] == 20_100


def test_update_with_nothing_new_keeps_the_version_and_refuses_another_engine_or_no_index(tmp_path, update_rows):
    store = _write_store(tmp_path / "v1", range(500), update_rows)
    build_index(store, tmp_path / "idx", "flat")
    report = update_index(store, tmp_path / "idx")
    assert (report["added"], report["removed"], report["version"]) == (0, 0, 1)
    other = _write_store(tmp_path / "v2", range(600), update_rows, engine={"engine_hash": "e2"})
    with pytest.raises(SpLIPError, match="was not embedded with the engine of index .* build a new index"):
        update_index(other, tmp_path / "idx")
    with pytest.raises(SpLIPError, match="is not a gallery index"):
        update_index(other, tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    fd = os.open(tmp_path / "idx", os.O_RDONLY)  # another writer holds the directory's lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(SpLIPError, match="is being written by another process"):
            update_index(_write_store(tmp_path / "v3", range(501), update_rows), tmp_path / "idx")
    finally:
        os.close(fd)
    assert update_index(open_store(tmp_path / "v3"), tmp_path / "idx")["version"] == 2  # lock released


def test_build_reports_when_the_recall_target_is_not_reached_and_keeps_the_best_params(tmp_path, update_rows):
    store = _write_store(tmp_path / "v1", range(UPDATE_N), update_rows)
    queries = synthetic_queries(8, UPDATE_DIM, 100)[0]
    missed = build_index(store, tmp_path / "b", "ivfpq", eval_queries=queries, k=20, target_recall=1.01)
    assert not missed["target_reached"] and not missed["tuned_reached"] and missed["recall"] <= 1.0
    assert GalleryIndex.load(tmp_path / "b").info["params"]["nprobe"] == missed["tuned"]["nprobe"]  # the best kept
