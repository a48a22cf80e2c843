"""The bench runner end to end on the tiny model and small galleries: every table is filled."""
from __future__ import annotations

import json

import numpy as np

from splip_engine.bench import BenchConfig, compiled_torch_embedder, run_bench
from splip_engine.export.parity import torch_embedder


def test_bench_runner_writes_every_table(tmp_path):
    cfg = BenchConfig(clip_model="tiny", threads=1, batches=(1, 4), modalities=("sketch",),
                      engines=("torch_fp32", "ort_fp32", "ort_fp16", "ort_int8"), rounds=2,
                      latency_rounds=3, search_sizes=(10_000,), search_kinds=("flat", "hnsw"),
                      embed_images=16, e2e_gallery=2_000, e2e_queries=3)
    results = run_bench(cfg, tmp_path)
    engines = {(r["engine"], r["batch"]) for r in results["encoders"]}
    assert engines == {(e, b) for e in cfg.engines for b in (1, 4)}
    assert all(r["vs_torch_fp32"] > 0 and r["img_per_s"] > 0 for r in results["encoders"])
    torch_row = next(r for r in results["encoders"] if r["engine"] == "torch_fp32")
    assert torch_row["top10_agreement"] == 1.0 and torch_row["min_cosine"] > 0.99999  # itself
    assert all(0.9 <= r["top10_agreement"] <= 1.0 for r in results["encoders"])
    assert {r["kind"] for r in results["search"]} == {"flat", "hnsw"}
    assert next(r for r in results["search"] if r["kind"] == "flat")["recall_at_100"] == 1.0
    assert [r["case"].split(" (")[0] for r in results["pipeline"]] == ["embed job", "end-to-end query"]
    assert json.loads((tmp_path / "results.json").read_text())["peak_matmul_gflops"] > 0
    assert "| sketch | ort_int8 | 4 |" in (tmp_path / "results.md").read_text()


def test_compiled_torch_engine_equals_eager(tiny_model):
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    compiled = compiled_torch_embedder(tiny_model, "sketch")(pixels)
    # inductor fuses and reorders float32 ops: rounding only
    np.testing.assert_allclose(compiled, torch_embedder(tiny_model, "sketch")(pixels), atol=1e-5)
