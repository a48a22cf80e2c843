"""CPU encoder throughput: the ViT-B-32 SpLIP sketch encoder (random weights), PyTorch eager fp32
vs ONNX Runtime fp32 vs ONNX Runtime int8, same thread count, batch 1 / 16 / 32.

    .venv/bin/pytest benchmarks/bench_encoders.py --benchmark-only     # pytest-benchmark, per engine x batch
    .venv/bin/python benchmarks/bench_encoders.py [--threads 2] [--variants] [--json out.json]

The runner measures every engine in one process, interleaved round by round (absolute times drift on
a shared machine; ratios taken in one run do not), and prints a Markdown table with img/s, the
ratio vs PyTorch, int8 vs the fp32 engine, p50/p99 batch-1 latency and GFLOP/s. `--variants` adds
the other attention exports (ONNX opset-23 `Attention`, unfused MatMul/Softmax) to compare with
the default com.microsoft MultiHeadAttention graph.
FLOP convention (ENGINE.md): ViT-B/32 image tower = 4.41 GMACs = 8.8 GFLOP per 224 px image; the
SpLIP prompts and text pass add work that this count leaves out.
Targets (ENGINE.md): ORT fp32 >= 2x PyTorch at batch 1 and >= 1.15x at batch 16; int8 >= 1.6x ORT fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pytest

THREADS = int(os.environ.get("SPLIP_BENCH_THREADS", "2"))
BATCHES = (1, 16, 32)
GFLOP_PER_IMAGE = 8.8
ENGINES = ("torch_fp32", "ort_fp32", "ort_int8")
VARIANTS = ("ort_fp32_onnx_attention", "ort_fp32_unfused")


def build_engines(threads: int, variants: bool = False) -> dict:
    """name -> embedder (pixels (n, 3, 224, 224) float32 -> (n, 512)) for the sketch tower."""
    import torch
    from splip_engine.export.graph import export_tower
    from splip_engine.export.parity import onnxruntime_embedder, torch_embedder
    from splip_engine.export.precision import to_int8

    from splip_engine import SpLIPConfig, build_model

    torch.set_num_threads(threads)
    model = build_model(SpLIPConfig(clip_model="ViT-B-32", pretrained="")).eval()
    fp32 = export_tower(model, "sketch", attention="contrib")
    engines = {
        "torch_fp32": torch_embedder(model, "sketch"),
        "ort_fp32": onnxruntime_embedder(fp32, threads),
        "ort_int8": onnxruntime_embedder(to_int8(fp32), threads),
    }
    if variants:
        engines["ort_fp32_onnx_attention"] = onnxruntime_embedder(export_tower(model, "sketch", attention="onnx"), threads)
        engines["ort_fp32_unfused"] = onnxruntime_embedder(export_tower(model, "sketch", attention="math"), threads)
    return engines


def measure(engines: dict, batches=BATCHES, rounds: int | None = None, seed: int = 0) -> list[dict]:
    """Interleaved timing: per batch, each round runs every engine once; median seconds per batch."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        pixels = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
        n_rounds = rounds or (30 if batch == 1 else 5)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for embed in engines.values():  # warm-up (allocations, ORT's first-run planning)
            embed(pixels)
        for _ in range(n_rounds):
            for name, embed in engines.items():
                times[name].append(_timed(embed, pixels))
        for name, t in times.items():
            seconds = float(np.median(t))
            rows.append({"engine": name, "batch": batch, "seconds": seconds, "img_per_s": batch / seconds,
                         "p50_ms": 1e3 * float(np.percentile(t, 50)), "p99_ms": 1e3 * float(np.percentile(t, 99)),
                         "gflop_per_s": GFLOP_PER_IMAGE * batch / seconds, "rounds": n_rounds})
    by_key = {(r["engine"], r["batch"]): r for r in rows}
    for r in rows:
        r["vs_torch"] = by_key[("torch_fp32", r["batch"])]["seconds"] / r["seconds"]
        r["vs_ort_fp32"] = by_key[("ort_fp32", r["batch"])]["seconds"] / r["seconds"]
    return rows


def matmul_gflops(threads: int, repeats: int = 10) -> float:
    """The CPU's fp32 matmul ceiling here: best GFLOP/s of a (4096 x 768) @ (768 x 3072) torch matmul."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 768), torch.randn(768, 3072)
    a @ b
    best = min(_timed(torch.matmul, a, b) for _ in range(repeats))
    return 2 * 4096 * 768 * 3072 / best / 1e9


def _timed(fn, *args) -> float:
    """Wall seconds of one call fn(*args)."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def markdown(rows: list[dict], threads: int, ceiling: float | None = None) -> str:
    """The results as a Markdown table."""
    lines = [f"ViT-B-32 SpLIP sketch encoder, CPU, {threads} threads (median of interleaved rounds)", "",
             "| engine | batch | img/s | x PyTorch | x ORT fp32 | p50 ms | p99 ms | GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['batch']} | {r['img_per_s']:.1f} | {r['vs_torch']:.2f} | "
                     f"{r['vs_ort_fp32']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['gflop_per_s']:.0f} |")
    if ceiling:
        lines += ["", f"fp32 matmul ceiling: {ceiling:.0f} GFLOP/s (torch, {threads} threads)"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def engines():
    return build_engines(THREADS)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("engine", ENGINES)
def test_encoder_throughput(benchmark, engines, engine, batch):
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    embed = engines[engine]
    benchmark.extra_info.update({"threads": THREADS, "batch": batch})
    benchmark.pedantic(embed, args=(pixels,), rounds=10 if batch == 1 else 3, warmup_rounds=1)
    benchmark.extra_info["img_per_s"] = batch / benchmark.stats.stats.median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--variants", action="store_true", help="also time the other attention exports")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per batch (default 30 at batch 1, else 5)")
    parser.add_argument("--json", dest="json_path", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = measure(build_engines(args.threads, args.variants), rounds=args.rounds)
    ceiling = matmul_gflops(args.threads)
    print(markdown(rows, args.threads, ceiling))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"threads": args.threads, "matmul_gflop_per_s": ceiling, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
