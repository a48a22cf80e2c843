"""GPU suite: one call on a CUDA machine (default sizes: about 6 minutes on an H100 / H200, estimate)
that writes JSON + Markdown after every stage, so a failure or a killed call keeps what ran.

Stages, in this order (`--only` picks some; `--budget-s` starts none whose estimate exceeds the
time left, and lists it as skipped):
- environment: versions of everything the suite uses, the device, the measured bf16 matmul peak;
- kernel_checks: every Triton kernel against its eager reference (fresh inputs, outputs poisoned
  before the run, the tolerances of kernels/reference.py);
- encoder: the SpLIP sketch encoder at batch 1 / 64 / 256 / 1024, images already on the GPU:
  torch eager fp32, fp16, bf16, fp16 + CUDA graphs, fp16 + torch.compile + CUDA graphs, fp16 +
  Triton attention + CUDA graphs (all the runtime's torch engine), ONNX Runtime CUDA fp16 and
  TensorRT fp16 where they really run here; img/s, p50 / p99 per call, TFLOP/s and % of the bf16
  peak; every variant's embeddings vs eager fp32 (min cosine >= 0.999);
- embed_job: the embedding job from tar shards (written here in parallel) with GPU decode
  (nvJPEG) vs the bare encoder on pre-decoded pixels at the same batch;
- search: flat search on the GPU (`similarity_topk`) vs FAISS flat on CPU at 1M x 512, top-100;
- kernel_timings: the kernels timed against PyTorch (SDPA; matmul + topk).
Each stage, and each variant inside one, runs guarded: an exception becomes a row
`failed: <type>: <message>` and the rest goes on. Progress lines are flushed as they happen.

FLOP convention (1 MAC = 2 FLOP): the encoder's FLOPs by torch.utils.flop_counter.FlopCounterMode
(matmul / conv / attention; the ViT-B/32 image tower alone = 4.41 GMACs); attention = 4 B H N^2 Dh;
search = 2 Q N D. Timing: CUDA events, loops of >= 1 ms, median over --repeats loops; p50 / p99
from single timed calls.

    python benchmarks/gpu_suite.py --out gpu_suite.json --budget-s 540   # CUDA machine (+ gpu_suite.md)
    python benchmarks/gpu_suite.py --only environment,encoder --out enc.json
    python benchmarks/gpu_suite.py --dry-run --out dry.json
        # CPU: the same code on tiny shapes, kernels in Triton's interpreter, CUDA-only rows
        # skipped with their reason; leaves the environment (TRITON_INTERPRET) as it found it
On the lent GPU machine (no package registry) benchmarks/gpu_bootstrap.py installs what it needs
and starts this suite (benchmarks/RESULTS.md, GPU section). Exit code 0 when every stage, variant
and check passed (stages skipped for the budget or --only are not failures), 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MIN_COSINE = 0.999
FLOP_CONVENTION = (
    "1 MAC = 2 FLOP; encoder: torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention only); "
    "attention: 4*B*H*N^2*Dh (causal counted in full); search: 2*Q*N*D"
)
VARIANT_LABELS = {
    "torch_cuda_fp32": "torch eager fp32", "torch_cuda_fp16": "torch fp16", "torch_cuda_bf16": "torch bf16",
    "torch_cuda_fp16_graphs": "torch fp16 + CUDA graphs",
    "torch_cuda_fp16_compiled_graphs": "torch fp16 + compile + CUDA graphs",
    "torch_cuda_fp16_triton_graphs": "torch fp16 + Triton attention + CUDA graphs",
}
STAGES = ("environment", "kernel_checks", "encoder", "embed_job", "search", "kernel_timings")
"""In the order they run: the headline numbers (encoder, embed job, search) before the kernel timings."""
SECTIONS = ("checks", "kernels", "encoder", "embed_job", "search")
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one run checks and times, and how long each stage is expected to take."""

    attention_checks: tuple[tuple[int, int, int, int, bool], ...]  # (B, H, N, Dh, causal)
    search_checks: tuple[tuple[int, int, int, int], ...]  # (Q, N, D, k)
    attention_timings: tuple[tuple[str, int, int, int, int, bool], ...]  # (label, B, H, N, Dh, causal)
    search_timings: tuple[tuple[int, int, int, int], ...]  # (Q, N, D, k)
    clip_model: str
    batches: tuple[int, ...]
    eager_fp32_batches: tuple[int, ...]  # fp32 eager is the slow reference: its largest batches cost most
    compiled_batches: tuple[int, ...]  # torch.compile compiles once per static batch: one bucket set
    warmup: int  # untimed calls before each measurement (the first ones compile the kernels)
    latency_calls: int  # single timed calls behind p50 / p99
    shard_images: int  # JPEGs in the tar shards of the embed-job part
    shard_image_size: tuple[int, int]  # (width, height) of those JPEGs
    shard_batch: int
    search_gallery: tuple[int, int, int, int]  # (Q, N, D, k) of GPU flat search vs FAISS CPU
    stage_seconds: tuple[tuple[str, float], ...]  # estimate per stage, for --budget-s

    def estimate(self, stage: str) -> float:
        return dict(self.stage_seconds)[stage]


GPU_SIZES = Sizes(
    attention_checks=(
        (64, 12, 56, 64, False),  # ViT-B/32 visual tower with prompts
        (16, 12, 203, 64, False),  # ViT-B/16
        (128, 8, 9, 64, True),  # text tower: [SOS] 4 prompts "sketch of a" [EOT]
        (3, 5, 7, 32, True),
        (2, 4, 130, 64, True),
        (2, 2, 1024, 64, False),
        (1, 3, 1500, 128, True),
    ),
    search_checks=(
        (64, 1_000_000, 512, 100),
        (256, 200_000, 512, 1024),
        (7, 12_345, 512, 100),
        (3, 1100, 48, 1000),
    ),
    attention_timings=(
        ("ViT-B/32 visual, batch 1", 1, 12, 56, 64, False),
        ("ViT-B/32 visual, batch 1024", 1024, 12, 56, 64, False),
        ("ViT-B/16 visual, batch 256", 256, 12, 203, 64, False),
        ("text tower, batch 1024", 1024, 8, 9, 64, True),
    ),
    search_timings=((1, 1_000_000, 512, 10), (64, 1_000_000, 512, 100), (1024, 1_000_000, 512, 100)),
    clip_model="ViT-B-32",
    batches=(1, 64, 256, 1024),
    eager_fp32_batches=(1, 64, 256),
    compiled_batches=(256,),
    warmup=3,
    latency_calls=50,
    shard_images=4096,
    shard_image_size=(500, 375),  # a typical web photo
    shard_batch=256,
    search_gallery=(64, 1_000_000, 512, 100),
    # estimates for an H100, not measured yet: sized from the work each stage does (compiles,
    # calls x batch x 8.8 GFLOP); the first GPU run replaces them with its measured "seconds"
    stage_seconds=(("environment", 20), ("kernel_checks", 45), ("encoder", 200), ("embed_job", 50),
                   ("search", 25), ("kernel_timings", 40)),
)

DRY_SIZES = Sizes(
    attention_checks=((2, 2, 7, 32, True), (1, 2, 77, 64, False), (1, 1, 130, 32, True)),
    search_checks=((5, 1200, 48, 10), (2, 1100, 16, 1000)),
    attention_timings=(("tiny visual, batch 2", 2, 2, 23, 32, False), ("tiny text, batch 2", 2, 2, 9, 32, True)),
    search_timings=((4, 1000, 64, 10),),
    clip_model="tiny",
    batches=(2,),
    eager_fp32_batches=(2,),
    compiled_batches=(),
    warmup=1,
    latency_calls=3,
    shard_images=12,
    shard_image_size=(48, 40),
    shard_batch=4,
    search_gallery=(4, 2000, 64, 10),
    # measured on this project's 2-core CPU (a busy one): what the rehearsal test's budget relies on
    stage_seconds=(("environment", 0.1), ("kernel_checks", 10), ("encoder", 90), ("embed_job", 15),
                   ("search", 0.1), ("kernel_timings", 10)),
)


# ------------------------------------------------------------------------------------ environment
@contextlib.contextmanager
def interpreter_environment(enabled: bool) -> Iterator[None]:
    """TRITON_INTERPRET=1 inside the block when `enabled` (our kernels read it at each launch,
    kernels/_launch.py), and os.environ exactly as it was afterwards: what the suite sets, and
    what libraries set on first use inside it (open_clip's TOKENIZERS_PARALLELISM, inductor's
    TORCHINDUCTOR_CACHE_DIR), is removed or restored."""
    before = dict(os.environ)
    if enabled:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        os.environ.update(before)


def _poisoned_empty():
    """tests/kernels/poison.py's `poisoned_empty` (a test helper, kept out of the package),
    loaded by path so that the repo root never shadows an installed splip_engine."""
    spec = importlib.util.spec_from_file_location("_splip_poison", REPO / "tests" / "kernels" / "poison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.poisoned_empty()


DISTRIBUTIONS = ("torch", "triton", "torchvision", "open_clip_torch", "onnx", "onnxscript", "onnxruntime",
                 "onnxruntime-gpu", "tensorrt", "faiss-cpu", "numpy", "pillow", "pyarrow", "safetensors", "splip-engine")


def package_versions() -> dict[str, str]:
    """Installed version (or "missing") of each distribution the suite and the engine use, read
    from the package metadata (fast: nothing is imported)."""
    from importlib import metadata

    versions = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def stage_environment(suite: "Suite") -> None:
    """Device, versions and the bf16 matmul peak (the % column's denominator)."""
    import splip_engine

    meta = suite.results["meta"]
    meta["packages"] = package_versions()
    meta["splip_engine_file"] = splip_engine.__file__  # the installed wheel's, on the GPU machine
    if suite.device.type == "cuda":
        from splip_engine.bench import cuda_matmul_tflops

        meta["device"] = torch.cuda.get_device_name(suite.device)
        meta["bf16_matmul_tflops"] = cuda_matmul_tflops()
    else:
        meta["device"] = f"CPU {platform.machine()} (dry run)"
        meta["bf16_matmul_tflops"] = _cpu_bf16_matmul_tflops()
    suite.peak_tflops = meta["bf16_matmul_tflops"]


def _cpu_bf16_matmul_tflops(n: int = 512) -> float:
    """The dry run's stand-in for the GPU peak: a small bf16 matmul on CPU (so % columns fill)."""
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    a @ b
    start = time.perf_counter()
    a @ b
    return 2 * n ** 3 / (time.perf_counter() - start) / 1e12


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


def latency(fn: Callable[[], object], device: torch.device, calls: int) -> dict:
    """p50 / p99 ms of single calls, each timed alone (the call's full latency, not a loop mean)."""
    times = sorted(_loop_ms(fn, 1, device) for _ in range(calls))
    return {"p50_ms": _quantile(times, 0.5), "p99_ms": _quantile(times, 0.99), "latency_calls": calls}


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------------------------ checks
def _search_data(n_queries: int, n_gallery: int, dim: int, query_dtype: torch.dtype, device: torch.device):
    """Unit-norm queries (Q, D) and float16 gallery (N, D), like the engine's embeddings."""
    queries = F.normalize(torch.randn(n_queries, dim, device=device), dim=1).to(query_dtype)
    gallery = F.normalize(torch.randn(n_gallery, dim, device=device), dim=1).half()
    return queries, gallery


def check_attention(suite: "Suite") -> None:
    from splip_engine.kernels import ATTENTION_ATOL, attention_inputs, attention_reference, fused_attention

    for dtype_index, (dtype, tol) in enumerate(ATTENTION_ATOL.items()):
        for case, (batch, heads, seq, head_dim, causal) in enumerate(suite.sizes.attention_checks):
            row = {"kernel": "fused_attention", "case": f"B{batch} H{heads} N{seq} Dh{head_dim} causal={causal}",
                   "dtype": str(dtype).removeprefix("torch."), "tol": tol}
            if dtype == torch.bfloat16 and suite.interpreting:
                suite.add("checks", {**row, "skipped": "bfloat16 needs CUDA (Triton's interpreter has none)"})
                continue
            with suite.guard("checks", row):
                q, k, v = attention_inputs(batch, heads, seq, head_dim, dtype, suite.device,
                                           seed=100 * dtype_index + case)
                with torch.inference_mode(), _poisoned_empty():
                    out = fused_attention(q, k, v, causal=causal)
                error = (out.float() - attention_reference(q, k, v, causal).float()).abs().max().item()  # NaN if unwritten
                suite.add("checks", {**row, "max_abs_err": error, "ok": error <= tol})


def check_search(suite: "Suite") -> None:
    from splip_engine.kernels import SIMILARITY_ATOL, similarity_topk, similarity_topk_reference

    for dtype_index, query_dtype in enumerate((torch.float16, torch.float32)):
        for case, (n_queries, n_gallery, dim, k) in enumerate(suite.sizes.search_checks):
            row = {"kernel": "similarity_topk", "case": f"Q{n_queries} N{n_gallery} D{dim} k{k}",
                   "dtype": f"{str(query_dtype).removeprefix('torch.')} x float16", "tol": SIMILARITY_ATOL}
            with suite.guard("checks", row):
                torch.manual_seed(100 * dtype_index + case)
                queries, gallery = _search_data(n_queries, n_gallery, dim, query_dtype, suite.device)
                with torch.inference_mode(), _poisoned_empty():
                    scores, indices = similarity_topk(queries, gallery, k)
                expected, _ = similarity_topk_reference(queries, gallery, k)
                # ties may order differently: indices are checked by the scores they point at
                pointed = torch.einsum("qkd,qd->qk", gallery[indices].float(), queries.float())  # (Q, k)
                score_err = (scores - expected).abs().max().item()
                index_err = (pointed - scores).abs().max().item()
                unique = bool(indices.sort(dim=1).values.diff(dim=1).ne(0).all())
                suite.add("checks", {**row, "max_abs_err": max(score_err, index_err), "indices_unique": unique,
                                     "ok": score_err <= SIMILARITY_ATOL and index_err <= SIMILARITY_ATOL and unique})


def stage_kernel_checks(suite: "Suite") -> None:
    """Every Triton kernel vs its float32 reference, outputs poisoned first."""
    check_attention(suite)
    check_search(suite)


# ------------------------------------------------------------------------------------ kernel timings
def stage_kernel_timings(suite: "Suite") -> None:
    """The Triton kernels vs PyTorch's own way, per case (fp16)."""
    from splip_engine.kernels import attention_inputs, fused_attention, similarity_topk

    sizes, device = suite.sizes, suite.device
    with torch.inference_mode():
        for label, batch, heads, seq, head_dim, causal in sizes.attention_timings:
            case = f"{label} (H{heads} N{seq} Dh{head_dim})"
            flops = 4 * batch * heads * seq * seq * head_dim
            with suite.guard("kernels", {"part": "attention fp16", "case": case, "variant": "inputs"}):
                q, k, v = attention_inputs(batch, heads, seq, head_dim, torch.float16, device)
                impls = {"triton fused_attention": functools.partial(fused_attention, q, k, v, causal),
                         "torch SDPA": functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=causal)}
                for impl, fn in impls.items():
                    row = {"part": "attention fp16", "case": case, "variant": impl}
                    with suite.guard("kernels", row):
                        timing = measure(fn, device, suite.repeats, sizes.warmup)
                        suite.add("kernels", {**row, **timing, "tflops": flops / timing["ms"] / 1e9})
        for n_queries, n_gallery, dim, k in sizes.search_timings:
            case = f"Q{n_queries} N{n_gallery} D{dim} k{k}"
            with suite.guard("kernels", {"part": "search fp16", "case": case, "variant": "inputs"}):
                queries, gallery = _search_data(n_queries, n_gallery, dim, torch.float16, device)
                impls = {"triton similarity_topk": functools.partial(similarity_topk, queries, gallery, k),
                         "torch matmul + topk": functools.partial(_matmul_topk, queries, gallery, k)}
                for impl, fn in impls.items():
                    row = {"part": "search fp16", "case": case, "variant": impl}
                    with suite.guard("kernels", row):
                        timing = measure(fn, device, suite.repeats, sizes.warmup)
                        suite.add("kernels", {**row, **timing,
                                              "tflops": 2 * n_queries * n_gallery * dim / timing["ms"] / 1e9})


def _matmul_topk(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's way: the whole (Q, N) score matrix in the inputs' dtype, then topk."""
    return (queries @ gallery.T).topk(k, dim=1)


# ------------------------------------------------------------------------------------ encoder table
def _engine_variants(device: torch.device) -> dict[str, str]:
    """Per row label: the engine to build (a bench torch variant, "ort", "tensorrt"), or
    "skipped: <reason>" where it cannot run here."""
    from splip_engine.bench import TORCH_CUDA_ENGINES
    from splip_engine.export.tensorrt import tensorrt_unavailable
    from splip_engine.ort_session import ort_cuda_unusable

    rows: dict[str, str] = {VARIANT_LABELS[name]: name for name in TORCH_CUDA_ENGINES}
    if device.type == "cuda":
        reason = ort_cuda_unusable(device.index or 0)
        rows["onnxruntime CUDA fp16"] = "ort" if reason is None else f"skipped: {reason}"
    else:
        rows["onnxruntime CUDA fp16"] = "skipped: ONNX Runtime CUDA needs CUDA"
    reason = tensorrt_unavailable()
    rows["TensorRT fp16"] = "tensorrt" if reason is None else f"skipped: {reason}"
    return rows


def _torch_forward(model, name: str, device: torch.device, sizes: Sizes):
    """The runtime's torch engine for bench variant `name` on `device` -> (forward on device
    pixels, skip reason). On CPU (the dry run) the variant runs without CUDA graphs, and
    torch.compile is skipped (minutes on CPU for a code path the GPU run times). The compiled
    variant's buckets are the compiled batches: its load-time gate pads the probe to one of them,
    so nothing else is compiled."""
    from splip_engine.bench import torch_engine, torch_engine_variants

    _, options = torch_engine_variants()[name]
    if device.type != "cuda":
        if options.compile:
            return None, "skipped: torch.compile is left out of the dry run (minutes of CPU compile)"
        options = dataclasses.replace(options, cuda_graphs=False)
    if options.compile and sizes.compiled_batches:
        options = dataclasses.replace(options, batch_buckets=sizes.compiled_batches)
    engine = torch_engine(model, options, str(device), max(sizes.batches))
    return (lambda pixels: engine.forward_device(pixels, "sketch")), None


def _onnxruntime_forward(model, device: torch.device, sizes: Sizes):
    """ONNX Runtime CUDA on the fp16 engine graph, device-resident through IO binding."""
    from splip_engine.export.graph import export_tower
    from splip_engine.export.precision import convert_precision
    from splip_engine.ort_session import open_session, run_bound

    graph = convert_precision(export_tower(model, "sketch"), "fp16")
    session, _ = open_session(graph.SerializeToString(), "cuda", strict=True, what="the fp16 sketch graph",
                              device_id=device.index or 0)
    dim = model.embed_dim

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.float().contiguous()
        out = torch.empty((len(pixels), dim), device=pixels.device)
        run_bound(session, {"pixels": pixels}, {"embeddings": out})
        return out

    return forward, None


def _tensorrt_forward(model, device: torch.device, sizes: Sizes):
    """A strongly typed (where the version allows) fp16 TensorRT plan, batch 1..max batch."""
    from splip_engine.export import tensorrt as trt_export
    from splip_engine.export.graph import export_tower

    version = trt_export.tensorrt_version()
    typing = trt_export.plan_typing(version)
    graph = trt_export.plan_onnx(export_tower(model, "sketch", opset=trt_export.TENSORRT_OPSET, attention="math"),
                                 fp16=True, typing=typing)
    max_batch = max(sizes.batches)
    profile = trt_export.PlanProfile("throughput", 1, max_batch, max_batch)
    plan, _ = trt_export.build_plan(graph.SerializeToString(), model.image_size, profile, fp16=True, typing=typing)
    runner = trt_export.PlanRunner(plan)
    return runner.run, None


def _batch_skip(how: str, batch: int, sizes: Sizes) -> str | None:
    """Why `batch` is not timed for variant `how` (None: it is)."""
    if how == "torch_cuda_fp16_compiled_graphs" and sizes.compiled_batches and batch not in sizes.compiled_batches:
        return f"compiled for batches {sizes.compiled_batches} only (one compile per bucket set)"
    if how == "torch_cuda_fp32" and batch not in sizes.eager_fp32_batches:
        return f"fp32 eager timed at batches {sizes.eager_fp32_batches} only (the slow reference)"
    return None


def stage_encoder(suite: "Suite") -> None:
    """Encoder rows per variant and batch (img/s, ms, p50/p99, TFLOP/s, % of peak), and the parity
    checks vs eager fp32; each variant and batch guarded."""
    from splip_engine.bench import encoder_gmacs
    from splip_engine.config import SpLIPConfig
    from splip_engine.model import build_model

    sizes, device = suite.sizes, suite.device
    model = build_model(SpLIPConfig(clip_model=sizes.clip_model, pretrained="")).eval()
    flops_per_image = 2e9 * encoder_gmacs(model, "sketch")
    suite.results["meta"]["encoder_gflop_per_image"] = flops_per_image / 1e9
    builders = {"ort": _onnxruntime_forward, "tensorrt": _tensorrt_forward}
    reference: dict[int, torch.Tensor] = {}
    for label, how in _engine_variants(device).items():
        part = {"part": f"encoder {sizes.clip_model} sketch", "variant": label}
        if how.startswith("skipped: "):
            suite.add("encoder", {**part, "case": "all batches", "skipped": how.removeprefix("skipped: ")})
            continue
        forward = None
        with suite.guard("encoder", {**part, "case": "building the engine"}):
            suite.log(f"encoder: building {label}")
            forward, skip = builders[how](model, device, sizes) if how in builders else \
                _torch_forward(model, how, device, sizes)
            if skip:
                suite.add("encoder", {**part, "case": "all batches", "skipped": skip.removeprefix("skipped: ")})
                forward = None
        if forward is None:
            _free(device)
            continue
        if device.type != "cuda" and "CUDA graphs" in label:
            part["variant"] = f"{label} (dry run: without CUDA graphs)"
        for batch in sizes.batches:
            row = {**part, "case": f"batch {batch}"}
            skip = _batch_skip(how, batch, sizes)
            if skip:
                suite.add("encoder", {**row, "skipped": skip})
                continue
            with suite.guard("encoder", row):
                _time_encoder_batch(suite, forward, row, batch, model.image_size, flops_per_image, reference)
        del forward
        _free(device)


def _time_encoder_batch(suite: "Suite", forward, row: dict, batch: int, image_size: int, flops_per_image: float,
                        reference: dict[int, torch.Tensor]) -> None:
    device = suite.device
    images = torch.randn(batch, 3, image_size, image_size, device=device,
                         generator=torch.Generator(device=device).manual_seed(batch))
    with torch.inference_mode():
        embeddings = forward(images).float()  # (B, D)
        timing = measure(lambda: forward(images), device, suite.repeats, suite.sizes.warmup)
        timing.update(latency(lambda: forward(images), device, suite.sizes.latency_calls))
    tflops = flops_per_image * batch / timing["ms"] / 1e9
    suite.add("encoder", {**row, **timing, "img_s": batch / timing["ms"] * 1e3, "tflops": tflops,
                          "pct_of_bf16_peak": 100 * tflops / suite.peak_tflops if suite.peak_tflops else None})
    label = row["variant"]
    if label == "torch eager fp32":
        reference[batch] = embeddings.clone()
    elif batch in reference:
        cosine = F.cosine_similarity(embeddings, reference[batch], dim=1).min().item()
        suite.add("checks", {"kernel": "encoder vs eager fp32", "case": f"{label}, batch {batch}", "dtype": "-",
                             "min_cosine": cosine, "tol": MIN_COSINE, "ok": cosine >= MIN_COSINE})


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ embed job
def _jpeg_photo(key: int, size: tuple[int, int]) -> bytes:
    """One smooth colour field with grain (realistic decode cost), seeded by its key."""
    from PIL import Image

    rng = np.random.default_rng(key)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    r, g, b = rng.uniform(0.2, 1.0, 3)
    pixels = np.stack([xs / width * 255 * r, ys / height * 255 * g, (xs + ys) / (width + height) * 255 * b],
                      axis=-1) + rng.normal(0, 8, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _write_shard(path: Path, keys: range, size: tuple[int, int]) -> Path:
    with tarfile.open(path, "w") as shard:
        for key in keys:
            blob = _jpeg_photo(key, size)
            member = tarfile.TarInfo(f"{key:08d}.jpg")
            member.size = len(blob)
            shard.addfile(member, io.BytesIO(blob))
    return path


def write_tar_shards(directory: Path, count: int, size: tuple[int, int], per_shard: int = 512,
                     workers: int | None = None) -> list[Path]:
    """webdataset-style shards `{00000..}.tar` of `count` JPEG photos (`<key>.jpg` members),
    written with the standard library, one shard per thread (numpy and PIL's encoder release
    the GIL)."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [(directory / f"{first // per_shard:05d}.tar", range(first, min(count, first + per_shard)))
            for first in range(0, count, per_shard)]
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda job: _write_shard(job[0], job[1], size), jobs))


def stage_embed_job(suite: "Suite") -> None:
    """Embedding from tar shards (`run_embed`, decode=auto: nvJPEG on CUDA) vs the bare encoder
    (same engine, same batch, pixels already decoded on the device)."""
    from splip_engine.bench import torch_engine
    from splip_engine.config import SpLIPConfig
    from splip_engine.model import build_model
    from splip_engine.runtime.embed_job import run_embed
    from splip_engine.runtime.gpu_decode import decode_preprocess
    from splip_engine.runtime.torch_backend import TorchOptions

    sizes, device, tmp = suite.sizes, suite.device, suite.tmp
    model = build_model(SpLIPConfig(clip_model=sizes.clip_model, pretrained="")).eval()
    options = TorchOptions(precision="fp16") if device.type == "cuda" else TorchOptions(cuda_graphs=False)
    engine = torch_engine(model, options, str(device), sizes.shard_batch)
    start = time.perf_counter()
    shards = write_tar_shards(tmp / "shards", sizes.shard_images, sizes.shard_image_size)
    suite.log(f"embed_job: {sizes.shard_images} JPEGs in {len(shards)} shards written in "
              f"{time.perf_counter() - start:.1f} s")
    blobs = []
    with tarfile.open(shards[0]) as archive:
        blobs += [archive.extractfile(m).read() for m in archive.getmembers() if m.name.endswith(".jpg")]
    batch = sizes.shard_batch
    decoded = decode_preprocess(blobs[:batch], "photo", engine.spec, device)
    bare = measure(lambda: engine.forward_device(decoded.pixels, "photo"), device, 10, sizes.warmup)
    bare_img_s = batch / bare["ms"] * 1e3
    row = {"part": "embed job", "variant": f"{engine.describe()} engine, batch {batch}",
           "images": sizes.shard_images, "image_size": list(sizes.shard_image_size), "bare_encoder_img_s": bare_img_s,
           "case": "run_embed over tar shards (decode=auto: nvJPEG on CUDA)"}
    pattern = str(tmp / "shards" / f"{{00000..{len(shards) - 1:05d}}}.tar")
    start = time.perf_counter()
    report = run_embed(engine, pattern, tmp / "store", batch_size=batch, progress=False, decode="auto")
    seconds = time.perf_counter() - start
    job_img_s = report.embedded / seconds
    suite.add("embed_job", {**row, "embedded": report.embedded, "job_img_s": job_img_s,
                            "job_vs_bare": job_img_s / bare_img_s, "seconds": seconds})


# ------------------------------------------------------------------------------------ search
def stage_search(suite: "Suite") -> None:
    """similarity_topk on the device vs FAISS IndexFlatIP on CPU (all cores), same data; the GPU's
    top-k checked against FAISS's by score (ties may order differently)."""
    from splip_engine.optional import import_faiss

    faiss = import_faiss()
    from splip_engine.kernels import similarity_topk

    sizes, device = suite.sizes, suite.device
    n_queries, n_gallery, dim, k = sizes.search_gallery
    torch.manual_seed(7)
    queries, gallery = _search_data(n_queries, n_gallery, dim, torch.float16, device)
    index = faiss.IndexFlatIP(dim)
    index.add(gallery.float().cpu().numpy())
    host_queries = queries.float().cpu().numpy()
    faiss_scores, _ = index.search(host_queries, k)
    with torch.inference_mode():
        scores, _ = similarity_topk(queries, gallery, k)
        gpu = measure(lambda: similarity_topk(queries, gallery, k), device, suite.repeats, sizes.warmup)
    begin = time.perf_counter()
    for _ in range(3):
        index.search(host_queries, k)
    faiss_ms = (time.perf_counter() - begin) * 1e3 / 3
    score_err = float(np.abs(scores.cpu().numpy() - faiss_scores).max())
    case = f"Q{n_queries} N{n_gallery:,} D{dim} k{k}"
    suite.add("search", {"part": "flat search", "case": case, "variant": "similarity_topk (GPU, fp16 gallery)", **gpu})
    suite.add("search", {"part": "flat search", "case": case,
                         "variant": f"FAISS IndexFlatIP (CPU, {os.cpu_count()} cores, fp32)",
                         "ms": faiss_ms, "gpu_speedup": faiss_ms / gpu["ms"], "max_score_diff_vs_gpu": score_err})


# ------------------------------------------------------------------------------------ the run
STAGE_FUNCTIONS: dict[str, Callable[["Suite"], None]] = {
    "environment": stage_environment, "kernel_checks": stage_kernel_checks, "encoder": stage_encoder,
    "embed_job": stage_embed_job, "search": stage_search, "kernel_timings": stage_kernel_timings,
}


def describe_failure(exc: BaseException) -> str:
    """`<type>: <first line of the message>` (at most 300 characters)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:300]


class Suite:
    """One run: the results so far, written (JSON + Markdown, atomically) after every row and stage."""

    def __init__(self, sizes: Sizes, device: torch.device, repeats: int, tmp: Path, out: Path,
                 budget_s: float | None):
        self.sizes, self.device, self.repeats, self.tmp, self.out = sizes, device, repeats, tmp, out
        self.budget_s = budget_s
        self.interpreting = device.type != "cuda"  # kernels run in Triton's interpreter on CPU
        self.peak_tflops: float | None = None
        self.started = time.monotonic()
        self.results: dict = {
            "meta": {"device": str(device), "torch": torch.__version__, "python": sys.version.split()[0],
                     "interpreter": self.interpreting, "clip_model": sizes.clip_model, "repeats": repeats,
                     "budget_s": budget_s, "flop_convention": FLOP_CONVENTION,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)},
            "stages": [], **{section: [] for section in SECTIONS},
        }

    def log(self, message: str) -> None:
        """A progress line, flushed at once: a killed call's last lines say where it was."""
        print(f"[{time.monotonic() - self.started:7.1f} s] {message}", flush=True)

    def add(self, section: str, row: dict) -> None:
        self.results[section].append(row)
        if "failed" in row:
            self.log(f"FAILED {section}: {row.get('case', '')} {row.get('variant', '')}: {row['failed']}")
        self.save()

    @contextlib.contextmanager
    def guard(self, section: str, row: dict) -> Iterator[None]:
        """Runs the block; an exception becomes `row` + failed: <type>: <message>, and the run goes on."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row, whatever raised it
            traceback.print_exc(limit=6, file=sys.stdout)
            self.add(section, {**row, "failed": describe_failure(exc)})
            _free(self.device)

    def run(self, stages: tuple[str, ...], selected: tuple[str, ...]) -> None:
        for name in stages:
            entry = {"stage": name, "estimate_s": self.sizes.estimate(name)}
            self.results["stages"].append(entry)
            left = None if self.budget_s is None else self.budget_s - (time.monotonic() - self.started)
            if name not in selected:
                entry["status"] = "skipped: not in --only"
            elif left is not None and entry["estimate_s"] > left:
                entry["status"] = f"skipped: budget (estimate {entry['estimate_s']:g} s > {max(left, 0):.1f} s left)"
            else:
                self._run_stage(name, entry)
            self.log(f"stage {name}: {entry['status']}")
            self.save()

    def _run_stage(self, name: str, entry: dict) -> None:
        entry["status"] = "running"  # what a killed call leaves in the file
        self.log(f"stage {name}: started (estimate {entry['estimate_s']:g} s)")
        self.save()
        begin = time.monotonic()
        try:
            STAGE_FUNCTIONS[name](self)
            entry["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a failed stage is a row; the next stage runs
            traceback.print_exc(limit=8, file=sys.stdout)
            entry["status"] = f"failed: {describe_failure(exc)}"
            _free(self.device)
        entry["seconds"] = round(time.monotonic() - begin, 2)

    def summary(self) -> dict:
        checks = [c for c in self.results["checks"] if "skipped" not in c and "failed" not in c]
        failed_rows = [r for s in SECTIONS for r in self.results[s] if "failed" in r]
        failed_stages = [s["stage"] for s in self.results["stages"] if s.get("status", "").startswith("failed")]
        return {"all_checks_ok": all(c["ok"] for c in checks), "failed_rows": len(failed_rows),
                "failed_stages": failed_stages}

    def save(self) -> None:
        self.results.update(self.summary())
        _write_atomic(self.out, json.dumps(self.results, indent=2, default=str))
        _write_atomic(self.out.with_suffix(".md"), format_markdown(self.results))

    def ok(self) -> bool:
        summary = self.summary()
        return summary["all_checks_ok"] and not summary["failed_rows"] and not summary["failed_stages"]


def _write_atomic(path: Path, text: str) -> None:
    """Temp file beside `path`, then rename: a reader (or a killed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ report
def _number(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    return format(value, spec) if isinstance(value, (int, float)) else ""


def format_markdown(results: dict) -> str:
    """The stages, the checks' verdict and the tables (failed and skipped rows say so)."""
    meta = results["meta"]
    checks = [c for c in results["checks"] if "skipped" not in c and "failed" not in c]
    failed = [c for c in checks if not c["ok"]]
    peak = meta.get("bf16_matmul_tflops")
    lines = [f"Device: {meta['device']}; torch {meta['torch']}; "
             f"bf16 matmul peak {format(peak, '.1f') if peak else '?'} TFLOP/s; checks: {len(checks) - len(failed)}/"
             f"{len(checks)} passed" + "".join(f"\n  FAILED {c['kernel']} {c['case']} {c['dtype']}: {c}" for c in failed),
             f"Encoder: {_number(meta, 'encoder_gflop_per_image', '.2f') or '?'} GFLOP per image; {FLOP_CONVENTION}.",
             "", "| stage | status | seconds | estimate s |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {s['stage']} | {s.get('status', '')} | {_number(s, 'seconds', '.1f')} | {s['estimate_s']:g} |"
              for s in results["stages"]]
    lines += ["", "| part | case | variant | ms (median) | p50 / p99 ms | img/s | TFLOP/s | % bf16 peak |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in results["checks"] + results["kernels"] + results["encoder"] + results["search"]:
        label = f"| {row.get('part', row.get('kernel', ''))} | {row.get('case', '')} | " \
                f"{row.get('variant', row.get('dtype', ''))}"
        if "failed" in row or "skipped" in row:
            verdict = f"failed: {row['failed']}" if "failed" in row else f"skipped: {row['skipped']}"
            lines.append(f"{label} | {verdict} | | | | |")
            continue
        if "ms" not in row:  # a passed check: its detail is in the JSON
            continue
        quantiles = f"{row['p50_ms']:.3f} / {row['p99_ms']:.3f}" if "p50_ms" in row else ""
        extra = f" (the GPU kernel: {row['gpu_speedup']:.1f}x this)" if "gpu_speedup" in row else ""
        pct = _number(row, "pct_of_bf16_peak", ".0f")
        lines.append(f"{label}{extra} | {row['ms']:.3f} | {quantiles} | {_number(row, 'img_s', ',.0f')} | "
                     f"{_number(row, 'tflops', '.3g')} | {pct + '%' if pct else ''} |")
    lines += ["", "| embed job | images | job img/s | bare encoder img/s | job / bare |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in results["embed_job"]:
        if "failed" in row:
            lines.append(f"| {row.get('case', '')} | failed: {row['failed']} | | | |")
            continue
        lines.append(f"| {row['case']}; {row['variant']} | {row['embedded']} | {row['job_img_s']:,.0f} | "
                     f"{row['bare_encoder_img_s']:,.0f} | {row['job_vs_bare']:.2f} |")
    return "\n".join(lines) + "\n"


def _stage_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {unknown or [text]}: choose from {','.join(STAGES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_suite.json"), help="JSON results path (.md beside it)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the same code on CPU on tiny shapes, kernels in Triton's interpreter")
    parser.add_argument("--repeats", type=int, default=None, help="timed loops per measurement (default 10; dry run 2)")
    parser.add_argument("--only", type=_stage_list, default=STAGES,
                        help=f"comma-separated stages to run, of {','.join(STAGES)} (default: all)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds this run may take: a stage whose estimate exceeds what is left is skipped "
                             "(default: no limit; 540 fits a 10-minute call)")
    args = parser.parse_args(argv)
    if args.dry_run:
        sizes, device, repeats = DRY_SIZES, torch.device("cpu"), args.repeats or 2
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --dry-run to exercise the code on CPU")
        sizes, device, repeats = GPU_SIZES, torch.device("cuda"), args.repeats or 10
    with interpreter_environment(args.dry_run), tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        suite = Suite(sizes, device, repeats, Path(tmp), args.out, args.budget_s)
        suite.log(f"gpu_suite: {device}, stages {','.join(args.only)}, budget {args.budget_s} s, writing {args.out}")
        suite.run(STAGES, args.only)
    print(format_markdown(suite.results), flush=True)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", flush=True)
    return 0 if suite.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
