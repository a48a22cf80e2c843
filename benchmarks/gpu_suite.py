"""GPU suite: check every Triton kernel against its reference, time the kernels against PyTorch
(SDPA; matmul + topk), then time the SpLIP sketch encoder (eager fp32, fp16, fp16 + Triton
kernels, each fp16 variant also replayed as a CUDA graph); print one table, write JSON.

Checks: fresh random inputs per case, every output allocation poisoned (NaN / int max) before the
run, tolerances per dtype; the fp16 encoders must keep min cosine >= 0.999 to eager fp32.
Timing: CUDA events around an inner loop of >= 1 ms, median over --repeats loops.
FLOP convention (1 MAC = 2 FLOP): the encoder's FLOPs are counted once by
torch.utils.flop_counter.FlopCounterMode (matmul / conv / attention; LayerNorm, softmax, GELU and
additions not counted; the ViT-B/32 image tower alone = 4.41 GMACs = 8.8 GFLOP per image);
attention = 4 B H N^2 Dh (QK^T and PV, causal counted in full as FlopCounterMode does);
search = 2 Q N D.

    python benchmarks/gpu_suite.py --out results.json        # CUDA machine: the full suite
    python benchmarks/gpu_suite.py --dry-run --out dry.json  # CPU: same code on tiny shapes,
                                                             # kernels in Triton's interpreter
Needs torch, triton, open_clip_torch and this package (pip install -e . --no-deps). Exit code 1
when a check fails (the JSON is written first).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.utils.flop_counter import FlopCounterMode

from splip_engine.config import SpLIPConfig
from splip_engine.io_utils import write_text_atomic
from splip_engine.kernels import (
    attention_reference,
    fused_attention,
    poisoned_empty,
    similarity_topk,
    similarity_topk_reference,
)
from splip_engine.model import build_model

ATTENTION_ATOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}  # vs float32 reference
SEARCH_ATOL = 1e-4  # same float32 products (fp16 ones are exact), summation order only
MIN_COSINE = 0.999
FLOP_CONVENTION = (
    "1 MAC = 2 FLOP; encoder: torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention only); "
    "attention: 4*B*H*N^2*Dh (causal counted in full); search: 2*Q*N*D"
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one run checks and times."""

    attention_checks: tuple[tuple[int, int, int, int, bool], ...]  # (B, H, N, Dh, causal)
    search_checks: tuple[tuple[int, int, int, int], ...]  # (Q, N, D, k)
    attention_timings: tuple[tuple[str, int, int, int, int, bool], ...]  # (label, B, H, N, Dh, causal)
    search_timings: tuple[tuple[int, int, int, int], ...]  # (Q, N, D, k)
    clip_model: str
    batches: tuple[int, ...]
    warmup: int  # untimed calls before each measurement (the first ones compile the kernels)


GPU_SIZES = Sizes(
    attention_checks=(
        (64, 12, 56, 64, False),  # ViT-B/32 visual tower with prompts
        (16, 12, 203, 64, False),  # ViT-B/16
        (128, 8, 9, 64, True),  # text tower: [SOS] 4 prompts "sketch of a" [EOT]
        (3, 5, 7, 32, True),
        (2, 3, 77, 64, False),
        (2, 4, 130, 64, True),
        (2, 2, 1024, 64, False),
        (2, 2, 1024, 64, True),
        (1, 3, 1500, 128, True),
    ),
    search_checks=(
        (64, 1_000_000, 512, 100),
        (1, 100_000, 512, 1),
        (256, 200_000, 512, 1024),
        (7, 12_345, 512, 100),
        (1000, 50_000, 512, 10),
        (3, 1100, 48, 1000),
    ),
    attention_timings=(
        ("ViT-B/32 visual, batch 1", 1, 12, 56, 64, False),
        ("ViT-B/32 visual, batch 1024", 1024, 12, 56, 64, False),
        ("ViT-B/16 visual, batch 256", 256, 12, 203, 64, False),
        ("text tower, batch 1024", 1024, 8, 9, 64, True),
    ),
    search_timings=((1, 1_000_000, 512, 10), (64, 1_000_000, 512, 100), (1024, 1_000_000, 512, 100),
                    (64, 1_000_000, 512, 1024)),
    clip_model="ViT-B-32",
    batches=(1, 64, 256, 1024),
    warmup=3,
)

DRY_SIZES = Sizes(
    attention_checks=((2, 2, 7, 32, True), (1, 2, 77, 64, False), (1, 1, 130, 32, True)),
    search_checks=((5, 1200, 48, 10), (2, 1100, 16, 1000)),
    attention_timings=(("tiny visual, batch 2", 2, 2, 23, 32, False), ("tiny text, batch 2", 2, 2, 9, 32, True)),
    search_timings=((4, 1000, 64, 10),),
    clip_model="tiny",
    batches=(2,),
    warmup=1,
)


# ------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loop_ms(fn: Callable[[], object], inner: int, device: torch.device) -> float:
    """Mean ms per call over `inner` back-to-back calls (CUDA events on CUDA, wall clock on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / inner
    begin = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - begin) * 1e3 / inner


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Median / p10 / p90 ms per call of `fn`, over `repeats` loops each lasting >= ~1 ms."""
    for _ in range(warmup):
        fn()
    _sync(device)
    inner = max(1, min(1000, round(1.0 / max(_loop_ms(fn, 1, device), 1e-3))))
    times = sorted(_loop_ms(fn, inner, device) for _ in range(repeats))
    return {"ms": statistics.median(times), "ms_p10": _quantile(times, 0.1), "ms_p90": _quantile(times, 0.9),
            "inner": inner, "repeats": repeats}


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------------------------ checks
def _qkv(batch: int, heads: int, seq: int, head_dim: int, dtype: torch.dtype, device: torch.device):
    """q, k, v (B, H, N, Dh) as the model makes them: strided views of one (B, N, 3, H, Dh) tensor."""
    return torch.randn(batch, seq, 3, heads, head_dim, device=device, dtype=dtype).permute(2, 0, 3, 1, 4)


def _search_data(n_queries: int, n_gallery: int, dim: int, query_dtype: torch.dtype, device: torch.device):
    """Unit-norm queries (Q, D) and float16 gallery (N, D), like the engine's embeddings."""
    queries = F.normalize(torch.randn(n_queries, dim, device=device), dim=1).to(query_dtype)
    gallery = F.normalize(torch.randn(n_gallery, dim, device=device), dim=1).half()
    return queries, gallery


def check_attention(sizes: Sizes, device: torch.device, interpreting: bool) -> list[dict]:
    rows = []
    for dtype_index, (dtype, tol) in enumerate(ATTENTION_ATOL.items()):
        for case, (batch, heads, seq, head_dim, causal) in enumerate(sizes.attention_checks):
            row = {"kernel": "fused_attention", "case": f"B{batch} H{heads} N{seq} Dh{head_dim} causal={causal}",
                   "dtype": str(dtype).removeprefix("torch."), "tol": tol}
            if dtype == torch.bfloat16 and interpreting:
                rows.append({**row, "skipped": "bfloat16 needs CUDA (Triton's interpreter has none)"})
                continue
            torch.manual_seed(100 * dtype_index + case)  # fresh inputs for every case, reproducible
            q, k, v = _qkv(batch, heads, seq, head_dim, dtype, device)
            with torch.inference_mode(), poisoned_empty():
                out = fused_attention(q, k, v, causal=causal)
            error = (out.float() - attention_reference(q, k, v, causal).float()).abs().max().item()  # NaN if unwritten
            rows.append({**row, "max_abs_err": error, "ok": error <= tol})
    return rows


def check_search(sizes: Sizes, device: torch.device) -> list[dict]:
    rows = []
    for dtype_index, query_dtype in enumerate((torch.float16, torch.float32)):
        for case, (n_queries, n_gallery, dim, k) in enumerate(sizes.search_checks):
            torch.manual_seed(100 * dtype_index + case)
            queries, gallery = _search_data(n_queries, n_gallery, dim, query_dtype, device)
            with torch.inference_mode(), poisoned_empty():
                scores, indices = similarity_topk(queries, gallery, k)
            expected, _ = similarity_topk_reference(queries, gallery, k)
            # ties may order differently: indices are checked by the scores they point at
            pointed = torch.einsum("qkd,qd->qk", gallery[indices].float(), queries.float())  # (Q, k)
            score_err = (scores - expected).abs().max().item()
            index_err = (pointed - scores).abs().max().item()
            unique = bool(indices.sort(dim=1).values.diff(dim=1).ne(0).all())
            rows.append({
                "kernel": "similarity_topk", "case": f"Q{n_queries} N{n_gallery} D{dim} k{k}",
                "dtype": f"{str(query_dtype).removeprefix('torch.')} x float16", "tol": SEARCH_ATOL,
                "max_abs_err": max(score_err, index_err), "indices_unique": unique,
                "ok": score_err <= SEARCH_ATOL and index_err <= SEARCH_ATOL and unique,
            })
    return rows


# ------------------------------------------------------------------------------------ kernel timings
def time_kernels(sizes: Sizes, device: torch.device, repeats: int) -> list[dict]:
    rows = []
    with torch.inference_mode():
        for label, batch, heads, seq, head_dim, causal in sizes.attention_timings:
            q, k, v = _qkv(batch, heads, seq, head_dim, torch.float16, device)
            flops = 4 * batch * heads * seq * seq * head_dim
            impls = {"triton fused_attention": functools.partial(fused_attention, q, k, v, causal),
                     "torch SDPA": functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=causal)}
            for impl, fn in impls.items():
                timing = measure(fn, device, repeats, sizes.warmup)
                rows.append({"part": "attention fp16", "case": f"{label} (H{heads} N{seq} Dh{head_dim})",
                             "variant": impl, **timing, "tflops": flops / timing["ms"] / 1e9})
        for n_queries, n_gallery, dim, k in sizes.search_timings:
            queries, gallery = _search_data(n_queries, n_gallery, dim, torch.float16, device)
            impls = {"triton similarity_topk": functools.partial(similarity_topk, queries, gallery, k),
                     "torch matmul + topk": functools.partial(_matmul_topk, queries, gallery, k)}
            for impl, fn in impls.items():
                timing = measure(fn, device, repeats, sizes.warmup)
                rows.append({"part": "search fp16", "case": f"Q{n_queries} N{n_gallery} D{dim} k{k}",
                             "variant": impl, **timing, "tflops": 2 * n_queries * n_gallery * dim / timing["ms"] / 1e9})
    return rows


def _matmul_topk(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's way: the whole (Q, N) score matrix in the inputs' dtype, then topk."""
    return (queries @ gallery.T).topk(k, dim=1)


# ------------------------------------------------------------------------------------ encoder
def count_flops_per_image(model, device: torch.device) -> float:
    """FLOPs of one sketch embedding (FlopCounterMode, eager SDPA path, 1 MAC = 2 FLOP)."""
    batch = 2
    images = torch.randn(batch, 3, model.image_size, model.image_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.set_kernels("torch").encode(images, "sketch")
    return counter.get_total_flops() / batch


def _graphed(model, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """model.encode(images, "sketch") captured once as a CUDA graph; each call replays it on the
    same (static) `images` buffer and returns the same output buffer."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the capture: Triton JIT, cuBLAS handles, allocator
        for _ in range(3):
            model.encode(images, "sketch")
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model.encode(images, "sketch")

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def time_encoder(sizes: Sizes, device: torch.device, repeats: int) -> tuple[list[dict], list[dict], float]:
    """Encoder rows (img/s, ms, TFLOP/s per variant and batch), parity checks, FLOPs per image."""
    fp32 = build_model(SpLIPConfig(clip_model=sizes.clip_model, pretrained="")).eval().to(device)
    fp16 = copy.deepcopy(fp32).half()
    flops_per_image = count_flops_per_image(fp32, device)
    variants = [  # (name, model, kernels, CUDA graph)
        ("eager fp32", fp32, "torch", False),
        ("fp16", fp16, "torch", False),
        ("fp16 + triton", fp16, "triton", False),
        ("fp16 + CUDA graph", fp16, "torch", True),
        ("fp16 + triton + CUDA graph", fp16, "triton", True),
    ]
    rows, checks = [], []
    for batch in sizes.batches:
        images = torch.randn(batch, 3, fp32.image_size, fp32.image_size, device=device)
        reference = None
        for name, model, kernels, graph in variants:
            row = {"part": f"encoder {sizes.clip_model} sketch", "case": f"batch {batch}", "variant": name}
            if graph and device.type != "cuda":
                rows.append({**row, "skipped": "CUDA graphs need CUDA"})
                continue
            model.set_kernels(kernels)
            inputs = images.to(model.clip.visual.conv1.weight.dtype)
            with torch.inference_mode():
                fn = _graphed(model, inputs) if graph else lambda m=model, x=inputs: m.encode(x, "sketch")
                embeddings = fn().float().clone()  # (B, D)
                timing = measure(fn, device, repeats, sizes.warmup)
            ms = timing["ms"]
            rows.append({**row, **timing, "img_s": batch / ms * 1e3, "tflops": flops_per_image * batch / ms / 1e9})
            if reference is None:
                reference = embeddings
                continue
            cosine = F.cosine_similarity(embeddings, reference, dim=1).min().item()
            checks.append({"kernel": "encoder vs eager fp32", "case": f"{name}, batch {batch}", "dtype": "float16",
                           "min_cosine": cosine, "tol": MIN_COSINE, "ok": cosine >= MIN_COSINE})
    fp16.set_kernels("torch")
    return rows, checks, flops_per_image


# ------------------------------------------------------------------------------------ report
def format_table(results: dict) -> str:
    """The checks' verdict and one Markdown table of every timing."""
    checks = [c for c in results["checks"] if "skipped" not in c]
    failed = [c for c in checks if not c["ok"]]
    lines = [f"device: {results['meta']['device']}; checks: {len(checks) - len(failed)}/{len(checks)} passed"
             + "".join(f"\n  FAILED {c['kernel']} {c['case']} {c['dtype']}: {c}" for c in failed),
             f"encoder: {results['meta']['encoder_gflop_per_image']:.2f} GFLOP per image; {FLOP_CONVENTION}",
             "", "| part | case | variant | ms (median) | img/s | TFLOP/s |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for row in results["kernels"] + results["encoder"]:
        if "skipped" in row:
            lines.append(f"| {row['part']} | {row['case']} | {row['variant']} | skipped: {row['skipped']} | | |")
            continue
        img_s = f"{row['img_s']:,.0f}" if "img_s" in row else ""
        lines.append(f"| {row['part']} | {row['case']} | {row['variant']} | {row['ms']:.3f} | {img_s} | {row['tflops']:.3g} |")
    return "\n".join(lines)


def run_suite(sizes: Sizes, device: torch.device, repeats: int) -> dict:
    interpreting = bool(triton.knobs.runtime.interpret)
    checks = check_attention(sizes, device, interpreting) + check_search(sizes, device)
    kernels = time_kernels(sizes, device, repeats)
    encoder, encoder_checks, flops_per_image = time_encoder(sizes, device, repeats)
    checks += encoder_checks
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()} (dry run)"
    meta = {
        "device": name, "torch": torch.__version__, "triton": triton.__version__, "python": sys.version.split()[0],
        "interpreter": interpreting, "clip_model": sizes.clip_model, "repeats": repeats,
        "flop_convention": FLOP_CONVENTION, "encoder_gflop_per_image": flops_per_image / 1e9,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    ok = all(c.get("ok", True) for c in checks)
    return {"meta": meta, "all_checks_ok": ok, "checks": checks, "kernels": kernels, "encoder": encoder}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_suite.json"), help="JSON results path")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the same code on CPU on tiny shapes, kernels in Triton's interpreter")
    parser.add_argument("--repeats", type=int, default=None, help="timed loops per measurement (default 30; dry run 2)")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # read by our kernels at launch
        sizes, device, repeats = DRY_SIZES, torch.device("cpu"), args.repeats or 2
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --dry-run to exercise the code on CPU")
        sizes, device, repeats = GPU_SIZES, torch.device("cuda"), args.repeats or 30
    results = run_suite(sizes, device, repeats)
    write_text_atomic(args.out, json.dumps(results, indent=2))
    print(format_table(results))
    print(f"wrote {args.out}")
    return 0 if results["all_checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
