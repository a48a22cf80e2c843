"""The bench runner end to end on the tiny model and small galleries: every table is filled, and
the columns hold what their names say (ratios against torch at the same batch, parity of each
engine against eager fp32)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from splip_engine.bench import BenchConfig, compiled_torch_embedder, run_bench
from splip_engine.export.parity import torch_embedder


@pytest.mark.slow
def test_bench_runner_writes_every_table(tmp_path):
    cfg = BenchConfig(clip_model="tiny", threads=1, batches=(1, 4), modalities=("sketch",),
                      engines=("torch_fp32", "ort_fp32", "ort_fp16", "ort_int8"), rounds=2,
                      latency_rounds=3, search_sizes=(10_000,), search_kinds=("flat", "hnsw"),
                      embed_images=16, e2e_gallery=2_000, e2e_queries=3)
    results = run_bench(cfg, tmp_path)
    rows = {(r["engine"], r["batch"]): r for r in results["encoders"]}
    assert set(rows) == {(e, b) for e in cfg.engines for b in (1, 4)}
    for (engine, batch), row in rows.items():
        torch_row = rows[("torch_fp32", batch)]
        # the ratio column is this engine's throughput over torch's at the same batch (a swapped or
        # cross-batch ratio fails here), and p50 is the median latency behind img/s
        assert row["vs_torch_fp32"] == pytest.approx(row["img_per_s"] / torch_row["img_per_s"], rel=1e-6)
        assert row["img_per_s"] == pytest.approx(batch / (row["p50_ms"] / 1e3), rel=1e-6)
    # parity columns against eager fp32 on the probe batch: the fp32 ONNX engine is the same math,
    # the lowered ones stay within their export gates (fp16: cos 0.999, int8: top-10 0.9)
    assert rows[("ort_fp32", 1)]["min_cosine"] > 0.99999
    assert rows[("ort_fp16", 1)]["min_cosine"] >= 0.999
    assert rows[("ort_int8", 1)]["top10_agreement"] >= 0.9
    search = {r["kind"]: r for r in results["search"]}
    assert set(search) == {"flat", "hnsw"} and 0.9 <= search["hnsw"]["recall_at_100"] <= 1.0
    assert [r["case"].split(" (")[0] for r in results["pipeline"]] == ["embed job", "end-to-end query"]
    assert json.loads((tmp_path / "results.json").read_text())["encoders"] == json.loads(json.dumps(results["encoders"]))
    assert "| sketch | ort_int8 | 4 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_compiled_torch_engine_equals_eager(tiny_model):
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    compiled = compiled_torch_embedder(tiny_model, "sketch")(pixels)
    # inductor fuses and reorders float32 ops: rounding only
    np.testing.assert_allclose(compiled, torch_embedder(tiny_model, "sketch")(pixels), atol=1e-5)
