"""The bench runner end to end on the tiny model and small galleries: every table is filled, and
the columns hold what their names say (ratios against torch at the same batch, parity of each
engine against eager fp32)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.bench import BenchConfig, compiled_torch_embedder, run_bench
from splip_engine.cli import main
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


@pytest.mark.slow
def test_cpu_table_has_every_cpu_engine_and_the_embed_job_before_and_after(tmp_path, monkeypatch):
    from splip_engine.bench_cpu import CPU_ENGINES
    from splip_engine.runtime.cpu_features import read_cpu_features

    monkeypatch.setenv("SPLIP_CPU_ENGINE", "openvino:f32")  # the bench must drop the pin: auto decides on this CPU
    cfg = dataclasses.replace(BenchConfig.cpu(), clip_model="tiny", threads=1, batches=(1, 4), rounds=2,
                              latency_rounds=2, search_sizes=(10_000,), search_kinds=("flat",), embed_images=8,
                              e2e_gallery=1_000, e2e_queries=2)
    results = run_bench(cfg, tmp_path)
    rows = {(r["engine"], r["batch"]): r for r in results["encoders"]}
    auto = {engine for engine, _ in rows if engine.startswith("auto (")}
    assert len(auto) == 1, auto  # one row, named after what auto picked
    expected = set(CPU_ENGINES) - {"auto"} - ({"openvino_bf16"} if not read_cpu_features().bf16 else set()) | auto
    assert {engine for engine, _ in rows} == expected
    # parity vs eager fp32 on the probe: the f32 engines are the same math; a user's OpenVINO and
    # ours in bf16 stay within the bf16 bound; the int8 ones within their gates' neighbours
    assert rows[("openvino_f32", 1)]["min_cosine"] > 0.9999
    assert rows[("openvino_user_default", 1)]["min_cosine"] > 0.999
    assert min(rows[(e, 4)]["top10_agreement"] for e in ("ort_int8", "ort_int8_static", "openvino_int8")) >= 0.75
    cases = [r["case"] for r in results["pipeline"]]
    assert [c.split(" (")[0] for c in cases] == ["embed job", "end-to-end query"] * 2
    assert "ORT fp32" in cases[0] and auto.pop()[6:-1] in cases[2]  # before, then after with auto's pick
    assert all(r["img_per_s"] > 0 for r in results["pipeline"] if "img_per_s" in r)
    assert os.environ["SPLIP_CPU_ENGINE"] == "openvino:f32"  # dropped only while auto decided
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert results["commit"] == head.stdout.strip()  # the results say which code they measured
    assert results["machine"]["cpu_flags"] == read_cpu_features().names()


def test_bench_engines_and_rounds_pick_rows_and_unknown_names_are_refused(monkeypatch):
    seen = []
    monkeypatch.setattr("splip_engine.bench.run_bench", lambda cfg, out: seen.append(cfg) or {})
    monkeypatch.setattr("splip_engine.bench.render_markdown", lambda results: "")
    result = CliRunner().invoke(main, ["bench", "--cpu", "--engines", "auto,ort_fp32", "--rounds", "3"])
    assert result.exit_code == 0, result.output
    assert (seen[0].engines, seen[0].rounds, seen[0].latency_rounds, seen[0].batches) == \
        (("ort_fp32", "auto"), 3, 12, (1, 16, 64))  # table order kept, the --cpu preset otherwise
    refused = CliRunner().invoke(main, ["bench", "--cpu", "--engines", "auto,openvino_fp64"])
    assert refused.exit_code == 2 and "--engines openvino_fp64: not rows of this table" in refused.output
    assert len(seen) == 1
