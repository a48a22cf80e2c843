"""CPU encoder throughput: the ViT-B-32 SpLIP sketch encoder (random weights), PyTorch eager fp32
vs ONNX Runtime fp32 vs ONNX Runtime int8, same thread count, batch 1 / 16 / 32.

    .venv/bin/pytest benchmarks/bench_encoders.py --benchmark-only     # pytest-benchmark, per engine x batch
    .venv/bin/python benchmarks/bench_encoders.py [--threads 2] [--variants] [--json out.json]

The runner times every engine in one process, interleaved round by round (splip_engine.bench:
absolute times drift on a shared machine, ratios taken in one run do not), and prints img/s,
the ratio vs PyTorch, int8 vs the fp32 engine, p50/p99 latency and GFLOP/s against the
measured matmul peak. `--variants` adds the other attention exports (ONNX opset-23
`Attention`, unfused MatMul/Softmax) next to the default com.microsoft MultiHeadAttention graph.
FLOP convention: torch FlopCounterMode MACs of SpLIP encode (1 MAC = 2 FLOP); the plain
ViT-B/32 image tower alone is 4.41 GMACs = 8.8 GFLOP per 224 px image (ENGINE.md).
Targets (ENGINE.md): ORT fp32 >= 2x PyTorch at batch 1, >= 1.15x at batch 16; int8 >= 1.6x ORT fp32.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

THREADS = int(os.environ.get("SPLIP_BENCH_THREADS", "2"))
BATCHES = (1, 16, 32)
ENGINES = ("torch_fp32", "ort_fp32", "ort_int8")
ROUNDS = {1: 30}
"""Interleaved rounds per batch size (default 5)."""


def build_engines(threads: int, variants: bool = False) -> tuple[dict, float]:
    """name -> embedder of the sketch tower, and its GMACs per image."""
    from splip_engine import SpLIPConfig, build_model
    from splip_engine.bench import build_embedders, encoder_gmacs
    from splip_engine.export.graph import export_tower
    from splip_engine.export.parity import onnxruntime_embedder

    model = build_model(SpLIPConfig(clip_model="ViT-B-32", pretrained="")).eval()
    engines = build_embedders(model, "sketch", ENGINES, threads)
    if variants:
        for attention in ("onnx", "math"):
            graph = export_tower(model, "sketch", attention=attention)
            engines[f"ort_fp32_{attention}_attention"] = onnxruntime_embedder(graph, threads, spinning=False)
    return engines, encoder_gmacs(model, "sketch")


def measure(engines: dict, gmacs: float, batches=BATCHES) -> list[dict]:
    """Rows per engine x batch: median img/s, p50/p99 ms, GFLOP/s, ratios vs torch and ORT fp32."""
    from splip_engine.bench import time_interleaved

    rows = []
    for batch in batches:
        times = time_interleaved(engines, 224, batch, ROUNDS.get(batch, 5))
        median = {name: float(np.median(t)) for name, t in times.items()}
        for name, t in times.items():
            rows.append({"engine": name, "batch": batch, "img_per_s": batch / median[name],
                         "p50_ms": 1e3 * float(np.percentile(t, 50)), "p99_ms": 1e3 * float(np.percentile(t, 99)),
                         "gflop_per_s": 2 * gmacs * batch / median[name], "rounds": len(t),
                         "vs_torch": median["torch_fp32"] / median[name],
                         "vs_ort_fp32": median["ort_fp32"] / median[name]})
    return rows


def markdown(rows: list[dict], threads: int, peak_gflops: float, gmacs: float) -> str:
    """The rows as a Markdown table."""
    lines = [f"ViT-B-32 SpLIP sketch encoder, CPU, {threads} threads, {gmacs:.2f} GMACs/image; "
             f"fp32 matmul peak {peak_gflops:.0f} GFLOP/s (medians of interleaved rounds)", "",
             "| engine | batch | img/s | x PyTorch | x ORT fp32 | p50 ms | p99 ms | GFLOP/s | % of peak |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['batch']} | {r['img_per_s']:.1f} | {r['vs_torch']:.2f} | "
                     f"{r['vs_ort_fp32']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['gflop_per_s']:.0f} | "
                     f"{100 * r['gflop_per_s'] / peak_gflops:.0f}% |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def engines():
    return build_engines(THREADS)[0]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("engine", ENGINES)
def test_encoder_throughput(benchmark, engines, engine, batch):
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    benchmark.extra_info.update({"threads": THREADS, "batch": batch})
    benchmark.pedantic(engines[engine], args=(pixels,), rounds=ROUNDS.get(batch, 5), warmup_rounds=1)
    benchmark.extra_info["img_per_s"] = batch / benchmark.stats.stats.median


def main() -> None:
    from splip_engine.bench import peak_matmul_gflops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--variants", action="store_true", help="also time the other attention exports")
    parser.add_argument("--json", dest="json_path", help="write the rows as JSON here")
    args = parser.parse_args()
    engines, gmacs = build_engines(args.threads, args.variants)
    rows = measure(engines, gmacs)
    peak = peak_matmul_gflops(args.threads)
    print(markdown(rows, args.threads, peak, gmacs))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"threads": args.threads, "gmacs_per_image": gmacs, "peak_matmul_gflops": peak, "rows": rows},
                      f, indent=2)


if __name__ == "__main__":
    main()
