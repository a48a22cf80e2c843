"""GPU suite: one call on a CUDA machine (target: under 8 minutes on an H100 / H200) that writes
JSON + Markdown:

1. kernels vs references: every Triton kernel checked against its eager reference (fresh inputs,
   outputs poisoned before the run, the tolerances of kernels/reference.py), then timed against
   PyTorch (SDPA; matmul + topk);
2. the encoder table, SpLIP sketch encoder at batch 1 / 64 / 256 / 1024, images already on the
   GPU: torch eager fp32, fp16, bf16, fp16 + CUDA graphs, fp16 + torch.compile + CUDA graphs,
   fp16 + Triton attention + CUDA graphs (all the runtime's torch engine), ONNX Runtime CUDA
   fp16 and TensorRT fp16 when installed; img/s, p50 / p99 per call, TFLOP/s and % of the
   measured bf16 matmul peak; every variant's embeddings vs eager fp32 (min cosine >= 0.999);
3. the embedding job from tar shards (written here with tarfile) with GPU decode (nvJPEG) vs the
   bare encoder on pre-decoded pixels at the same batch;
4. flat search on the GPU (`similarity_topk`) vs FAISS flat on CPU at 1M x 512, top-100.

FLOP convention (1 MAC = 2 FLOP): the encoder's FLOPs by torch.utils.flop_counter.FlopCounterMode
(matmul / conv / attention; the ViT-B/32 image tower alone = 4.41 GMACs); attention = 4 B H N^2 Dh;
search = 2 Q N D. Timing: CUDA events, loops of >= 1 ms, median over --repeats loops; p50 / p99
from single timed calls.

    python benchmarks/gpu_suite.py --out gpu_suite.json   # CUDA machine: the full suite (+ gpu_suite.md)
    python benchmarks/gpu_suite.py --dry-run --out dry.json
        # CPU: the same code on tiny shapes, kernels in Triton's interpreter, CUDA-only rows
        # skipped with their reason; leaves the environment (TRITON_INTERPRET) as it found it
Needs torch, triton, torchvision, open_clip_torch, faiss-cpu and this package. Exit code 1 when a
check fails (the results are written first).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import triton

from splip_engine.bench import (
    TORCH_CUDA_ENGINES,
    cuda_matmul_tflops,
    encoder_gmacs,
    torch_engine,
    torch_engine_variants,
)
from splip_engine.config import SpLIPConfig
from splip_engine.io_utils import write_text_atomic
from splip_engine.kernels import (
    ATTENTION_ATOL,
    SIMILARITY_ATOL,
    attention_inputs,
    attention_reference,
    fused_attention,
    poisoned_empty,
    similarity_topk,
    similarity_topk_reference,
)
from splip_engine.model import build_model

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


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one run checks and times."""

    attention_checks: tuple[tuple[int, int, int, int, bool], ...]  # (B, H, N, Dh, causal)
    search_checks: tuple[tuple[int, int, int, int], ...]  # (Q, N, D, k)
    attention_timings: tuple[tuple[str, int, int, int, int, bool], ...]  # (label, B, H, N, Dh, causal)
    search_timings: tuple[tuple[int, int, int, int], ...]  # (Q, N, D, k)
    clip_model: str
    batches: tuple[int, ...]
    compiled_batches: tuple[int, ...]  # torch.compile compiles once per static batch: a subset bounds the time
    warmup: int  # untimed calls before each measurement (the first ones compile the kernels)
    latency_calls: int  # single timed calls behind p50 / p99
    shard_images: int  # JPEGs in the tar shards of the embed-job part
    shard_image_size: tuple[int, int]  # (width, height) of those JPEGs
    shard_batch: int
    search_gallery: tuple[int, int, int, int]  # (Q, N, D, k) of GPU flat search vs FAISS CPU


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
    compiled_batches=(1, 1024),
    warmup=3,
    latency_calls=200,
    shard_images=8192,
    shard_image_size=(500, 375),  # a typical web photo
    shard_batch=256,
    search_gallery=(64, 1_000_000, 512, 100),
)

DRY_SIZES = Sizes(
    attention_checks=((2, 2, 7, 32, True), (1, 2, 77, 64, False), (1, 1, 130, 32, True)),
    search_checks=((5, 1200, 48, 10), (2, 1100, 16, 1000)),
    attention_timings=(("tiny visual, batch 2", 2, 2, 23, 32, False), ("tiny text, batch 2", 2, 2, 9, 32, True)),
    search_timings=((4, 1000, 64, 10),),
    clip_model="tiny",
    batches=(2,),
    compiled_batches=(),
    warmup=1,
    latency_calls=3,
    shard_images=12,
    shard_image_size=(48, 40),
    shard_batch=4,
    search_gallery=(4, 2000, 64, 10),
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


def check_attention(sizes: Sizes, device: torch.device, interpreting: bool) -> list[dict]:
    rows = []
    for dtype_index, (dtype, tol) in enumerate(ATTENTION_ATOL.items()):
        for case, (batch, heads, seq, head_dim, causal) in enumerate(sizes.attention_checks):
            row = {"kernel": "fused_attention", "case": f"B{batch} H{heads} N{seq} Dh{head_dim} causal={causal}",
                   "dtype": str(dtype).removeprefix("torch."), "tol": tol}
            if dtype == torch.bfloat16 and interpreting:
                rows.append({**row, "skipped": "bfloat16 needs CUDA (Triton's interpreter has none)"})
                continue
            q, k, v = attention_inputs(batch, heads, seq, head_dim, dtype, device, seed=100 * dtype_index + case)
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
                "dtype": f"{str(query_dtype).removeprefix('torch.')} x float16", "tol": SIMILARITY_ATOL,
                "max_abs_err": max(score_err, index_err), "indices_unique": unique,
                "ok": score_err <= SIMILARITY_ATOL and index_err <= SIMILARITY_ATOL and unique,
            })
    return rows


# ------------------------------------------------------------------------------------ kernel timings
def time_kernels(sizes: Sizes, device: torch.device, repeats: int) -> list[dict]:
    rows = []
    with torch.inference_mode():
        for label, batch, heads, seq, head_dim, causal in sizes.attention_timings:
            q, k, v = attention_inputs(batch, heads, seq, head_dim, torch.float16, device)
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


# ------------------------------------------------------------------------------------ encoder table
def _engine_variants(device: torch.device) -> dict[str, str]:
    """Per row label: the engine to build (a bench torch variant, "ort", "tensorrt"), or
    "skipped: <reason>" where it cannot run here."""
    from splip_engine.export.tensorrt import tensorrt_unavailable
    from splip_engine.ort_session import ort_cuda_built

    rows: dict[str, str] = {VARIANT_LABELS[name]: name for name in TORCH_CUDA_ENGINES}
    rows["onnxruntime CUDA fp16"] = "ort" if device.type == "cuda" and ort_cuda_built() else \
        "skipped: onnxruntime-gpu (CUDAExecutionProvider) is not installed" if device.type == "cuda" else \
        "skipped: ONNX Runtime CUDA needs CUDA"
    reason = tensorrt_unavailable()
    rows["TensorRT fp16"] = "tensorrt" if reason is None else f"skipped: {reason}"
    return rows


def _torch_forward(model, name: str, device: torch.device, max_batch: int):
    """The runtime's torch engine for bench variant `name` on `device` -> (forward on device
    pixels, skip reason). On CPU (the dry run) the variant runs without CUDA graphs, and
    torch.compile is skipped (minutes on CPU for a code path the GPU run times)."""
    _, options = torch_engine_variants()[name]
    if device.type != "cuda":
        if options.compile:
            return None, "skipped: torch.compile is left out of the dry run (minutes of CPU compile)"
        options = dataclasses.replace(options, cuda_graphs=False)
    engine = torch_engine(model, options, device.type, max_batch)
    return (lambda pixels: engine.forward_device(pixels, "sketch")), None


def _onnxruntime_forward(model, device: torch.device, max_batch: int):
    """ONNX Runtime CUDA on the fp16 engine graph, device-resident through IO binding."""
    from splip_engine.export.graph import export_tower
    from splip_engine.export.precision import convert_precision
    from splip_engine.ort_session import open_session

    graph = convert_precision(export_tower(model, "sketch"), "fp16")
    session, ran_on = open_session(graph.SerializeToString(), "cuda", strict=True, what="the fp16 sketch graph")
    dim = model.embed_dim

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.float().contiguous()
        out = torch.empty((len(pixels), dim), device=pixels.device)
        binding = session.io_binding()
        binding.bind_input("pixels", "cuda", 0, np.float32, tuple(pixels.shape), pixels.data_ptr())
        binding.bind_output("embeddings", "cuda", 0, np.float32, tuple(out.shape), out.data_ptr())
        session.run_with_iobinding(binding)
        return out

    return forward, None


def _tensorrt_forward(model, device: torch.device, max_batch: int):
    """A strongly typed (where the version allows) fp16 TensorRT plan, batch 1..max_batch."""
    from splip_engine.export import tensorrt as trt_export
    from splip_engine.export.graph import export_tower

    version = trt_export.tensorrt_version()
    typing = trt_export.plan_typing(version)
    graph = trt_export.plan_onnx(export_tower(model, "sketch", opset=trt_export.TENSORRT_OPSET, attention="math"),
                                 fp16=True, typing=typing)
    profile = trt_export.PlanProfile("throughput", 1, max_batch, max_batch)
    plan, _ = trt_export.build_plan(graph.SerializeToString(), model.image_size, profile, fp16=True, typing=typing)
    runner = trt_export.PlanRunner(plan)
    return runner.run, None


def time_encoder(sizes: Sizes, device: torch.device, repeats: int, peak_tflops: float) -> tuple[list, list, float]:
    """Encoder rows per variant and batch (img/s, ms, p50/p99, TFLOP/s, % of peak), the parity
    checks vs eager fp32, and FLOPs per image."""
    model = build_model(SpLIPConfig(clip_model=sizes.clip_model, pretrained="")).eval()
    flops_per_image = 2e9 * encoder_gmacs(model, "sketch")
    max_batch = max(sizes.batches)
    builders = {"ort": _onnxruntime_forward, "tensorrt": _tensorrt_forward}
    rows, checks, reference = [], [], {}
    for label, how in _engine_variants(device).items():
        part = {"part": f"encoder {sizes.clip_model} sketch", "variant": label}
        if how.startswith("skipped: "):
            rows.append({**part, "case": "all batches", "skipped": how.removeprefix("skipped: ")})
            continue
        forward, skip = builders[how](model, device, max_batch) if how in builders else \
            _torch_forward(model, how, device, max_batch)
        if skip:
            rows.append({**part, "case": "all batches", "skipped": skip.removeprefix("skipped: ")})
            continue
        if device.type != "cuda" and "CUDA graphs" in label:
            part["variant"] = f"{label} (dry run: without CUDA graphs)"
        for batch in sizes.batches:
            row = {**part, "case": f"batch {batch}"}
            if how == "torch_cuda_fp16_compiled_graphs" and sizes.compiled_batches and \
                    batch not in sizes.compiled_batches:
                rows.append({**row, "skipped": f"compiled for batches {sizes.compiled_batches} only (compile time)"})
                continue
            images = torch.randn(batch, 3, model.image_size, model.image_size, device=device,
                                 generator=torch.Generator(device=device).manual_seed(batch))
            with torch.inference_mode():
                embeddings = forward(images).float()  # (B, D)
                timing = measure(lambda: forward(images), device, repeats, sizes.warmup)
                timing.update(latency(lambda: forward(images), device, sizes.latency_calls))
            tflops = flops_per_image * batch / timing["ms"] / 1e9
            rows.append({**row, **timing, "img_s": batch / timing["ms"] * 1e3, "tflops": tflops,
                         "pct_of_bf16_peak": 100 * tflops / peak_tflops})
            if label == "torch eager fp32":
                reference[batch] = embeddings.clone()
            elif batch in reference:
                cosine = F.cosine_similarity(embeddings, reference[batch], dim=1).min().item()
                checks.append({"kernel": "encoder vs eager fp32", "case": f"{label}, batch {batch}",
                               "dtype": "-", "min_cosine": cosine, "tol": MIN_COSINE, "ok": cosine >= MIN_COSINE})
        del forward
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, checks, flops_per_image


# ------------------------------------------------------------------------------------ embed job
def write_tar_shards(directory: Path, count: int, size: tuple[int, int], per_shard: int = 1000) -> list[Path]:
    """webdataset-style shards `{00000..}.tar` of `count` JPEG photos (`<key>.jpg` members) of
    smooth colour fields with grain (realistic decode cost), written with the standard library."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shards = []
    for first in range(0, count, per_shard):
        path = directory / f"{first // per_shard:05d}.tar"
        with tarfile.open(path, "w") as shard:
            for key in range(first, min(count, first + per_shard)):
                r, g, b = rng.uniform(0.2, 1.0, 3)
                pixels = np.stack([xs / width * 255 * r, ys / height * 255 * g, (xs + ys) / (width + height) * 255 * b],
                                  axis=-1) + rng.normal(0, 8, (height, width, 3))
                buffer = io.BytesIO()
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
                member = tarfile.TarInfo(f"{key:08d}.jpg")
                member.size = buffer.tell()
                buffer.seek(0)
                shard.addfile(member, buffer)
        shards.append(path)
    return shards


def _shard_inputs_supported(shard: Path, members: int) -> bool:
    """Whether the runtime's input layer reads tar shards (another change adds it): one item per
    JPEG member, ids `<shard>/<key>` as ENGINE.md has them."""
    from splip_engine.errors import SpLIPError
    from splip_engine.runtime.inputs import resolve_inputs

    try:
        items = resolve_inputs(shard)
    except (SpLIPError, OSError, UnicodeDecodeError, ValueError):
        return False
    return len(items) == members and str(items[0][0]).endswith(f"{shard.stem}/00000000")


def time_embed_job(sizes: Sizes, device: torch.device, tmp: Path) -> list[dict]:
    """Embedding from tar shards with GPU decode vs the bare encoder (same engine, same batch, pixels
    already decoded on the device). Through `run_embed` when splip_engine.runtime.inputs reads tar
    shards; otherwise GPU decode + encode timed directly over the same JPEG bytes (and said so)."""
    from splip_engine.runtime.embed_job import run_embed
    from splip_engine.runtime.gpu_decode import decode_preprocess
    from splip_engine.runtime.torch_backend import TorchOptions

    model = build_model(SpLIPConfig(clip_model=sizes.clip_model, pretrained="")).eval()
    options = TorchOptions(precision="fp16") if device.type == "cuda" else TorchOptions(cuda_graphs=False)
    engine = torch_engine(model, options, device.type, sizes.shard_batch)
    shards = write_tar_shards(tmp / "shards", sizes.shard_images, sizes.shard_image_size)
    blobs = []
    for shard in shards:
        with tarfile.open(shard) as archive:
            blobs += [archive.extractfile(m).read() for m in archive.getmembers() if m.name.endswith(".jpg")]
    batch = sizes.shard_batch
    decoded = decode_preprocess(blobs[:batch], "photo", engine.spec, device)
    bare = measure(lambda: engine.forward_device(decoded.pixels, "photo"), device, 10, sizes.warmup)
    bare_img_s = batch / bare["ms"] * 1e3
    row = {"part": "embed job", "variant": f"{engine.describe()} engine, batch {batch}",
           "images": len(blobs), "image_size": list(sizes.shard_image_size), "bare_encoder_img_s": bare_img_s}
    if _shard_inputs_supported(shards[0], min(len(blobs), 1000)):
        pattern = str(tmp / "shards" / f"{{00000..{len(shards) - 1:05d}}}.tar")
        start = time.perf_counter()
        report = run_embed(engine, pattern, tmp / "store", batch_size=batch, progress=False, decode="auto")
        seconds = time.perf_counter() - start
        row.update(case="run_embed over tar shards (decode=auto: nvJPEG on CUDA)", embedded=report.embedded)
    else:
        _sync(device)
        start = time.perf_counter()
        for first in range(0, len(blobs), batch):
            pixels = decode_preprocess(blobs[first:first + batch], "photo", engine.spec, device).pixels
            engine.embed_tensor(pixels, "photo").cpu()
        seconds = time.perf_counter() - start
        row.update(case="GPU decode + encode over the shards' JPEG bytes (splip_engine.runtime.inputs cannot read "
                        "tar shards yet, so not through run_embed)", embedded=len(blobs))
    job_img_s = row["embedded"] / seconds
    row.update(job_img_s=job_img_s, job_vs_bare=job_img_s / bare_img_s, seconds=seconds)
    return [row]


# ------------------------------------------------------------------------------------ search
def time_search(sizes: Sizes, device: torch.device, repeats: int) -> list[dict]:
    """similarity_topk on the device vs FAISS IndexFlatIP on CPU (all cores), same data; the GPU's
    top-k checked against FAISS's by score (ties may order differently)."""
    from splip_engine.optional import import_faiss

    faiss = import_faiss()
    n_queries, n_gallery, dim, k = sizes.search_gallery
    torch.manual_seed(7)
    queries, gallery = _search_data(n_queries, n_gallery, dim, torch.float16, device)
    index = faiss.IndexFlatIP(dim)
    index.add(gallery.float().cpu().numpy())
    host_queries = queries.float().cpu().numpy()
    faiss_scores, _ = index.search(host_queries, k)
    with torch.inference_mode():
        scores, _ = similarity_topk(queries, gallery, k)
        gpu = measure(lambda: similarity_topk(queries, gallery, k), device, repeats, sizes.warmup)
    begin = time.perf_counter()
    for _ in range(3):
        index.search(host_queries, k)
    faiss_ms = (time.perf_counter() - begin) * 1e3 / 3
    score_err = float(np.abs(scores.cpu().numpy() - faiss_scores).max())
    case = f"Q{n_queries} N{n_gallery:,} D{dim} k{k}"
    return [{"part": "flat search", "case": case, "variant": "similarity_topk (GPU, fp16 gallery)", **gpu},
            {"part": "flat search", "case": case, "variant": f"FAISS IndexFlatIP (CPU, {os.cpu_count()} cores, fp32)",
             "ms": faiss_ms, "gpu_speedup": faiss_ms / gpu["ms"], "max_score_diff_vs_gpu": score_err}]


# ------------------------------------------------------------------------------------ report
def format_markdown(results: dict) -> str:
    """The checks' verdict and the tables."""
    meta = results["meta"]
    checks = [c for c in results["checks"] if "skipped" not in c]
    failed = [c for c in checks if not c["ok"]]
    lines = [f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}; "
             f"bf16 matmul peak {meta['bf16_matmul_tflops']:.1f} TFLOP/s; checks: {len(checks) - len(failed)}/"
             f"{len(checks)} passed" + "".join(f"\n  FAILED {c['kernel']} {c['case']} {c['dtype']}: {c}" for c in failed),
             f"Encoder: {meta['encoder_gflop_per_image']:.2f} GFLOP per image; {FLOP_CONVENTION}.", "",
             "| part | case | variant | ms (median) | p50 / p99 ms | img/s | TFLOP/s | % bf16 peak |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in results["kernels"] + results["encoder"] + results["search"]:
        if "skipped" in row:
            lines.append(f"| {row['part']} | {row['case']} | {row['variant']} | skipped: {row['skipped']} | | | | |")
            continue
        quantiles = f"{row['p50_ms']:.3f} / {row['p99_ms']:.3f}" if "p50_ms" in row else ""
        img_s = f"{row['img_s']:,.0f}" if "img_s" in row else ""
        tflops = f"{row['tflops']:.3g}" if "tflops" in row else ""
        pct = f"{row['pct_of_bf16_peak']:.0f}%" if "pct_of_bf16_peak" in row else ""
        extra = f" (the GPU kernel: {row['gpu_speedup']:.1f}x this)" if "gpu_speedup" in row else ""
        lines.append(f"| {row['part']} | {row['case']} | {row['variant']}{extra} | {row['ms']:.3f} | {quantiles} | "
                     f"{img_s} | {tflops} | {pct} |")
    lines += ["", "| embed job | images | job img/s | bare encoder img/s | job / bare |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in results["embed_job"]:
        lines.append(f"| {row['case']}; {row['variant']} | {row['embedded']} | {row['job_img_s']:,.0f} | "
                     f"{row['bare_encoder_img_s']:,.0f} | {row['job_vs_bare']:.2f} |")
    return "\n".join(lines) + "\n"


def run_suite(sizes: Sizes, device: torch.device, repeats: int, tmp: Path) -> dict:
    interpreting = bool(triton.knobs.runtime.interpret)
    peak = cuda_matmul_tflops() if device.type == "cuda" else _cpu_bf16_matmul_tflops()
    checks = check_attention(sizes, device, interpreting) + check_search(sizes, device)
    kernels = time_kernels(sizes, device, repeats)
    encoder, encoder_checks, flops_per_image = time_encoder(sizes, device, repeats, peak)
    checks += encoder_checks
    embed_job = time_embed_job(sizes, device, tmp)
    search = time_search(sizes, device, repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()} (dry run)"
    meta = {
        "device": name, "torch": torch.__version__, "triton": triton.__version__, "python": sys.version.split()[0],
        "interpreter": interpreting, "clip_model": sizes.clip_model, "repeats": repeats,
        "flop_convention": FLOP_CONVENTION, "encoder_gflop_per_image": flops_per_image / 1e9,
        "bf16_matmul_tflops": peak, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    ok = all(c.get("ok", True) for c in checks)
    return {"meta": meta, "all_checks_ok": ok, "checks": checks, "kernels": kernels, "encoder": encoder,
            "embed_job": embed_job, "search": search}


def _cpu_bf16_matmul_tflops(n: int = 512) -> float:
    """The dry run's stand-in for the GPU peak: a small bf16 matmul on CPU (so % columns fill)."""
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    a @ b
    start = time.perf_counter()
    a @ b
    return 2 * n ** 3 / (time.perf_counter() - start) / 1e12


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_suite.json"), help="JSON results path (.md beside it)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the same code on CPU on tiny shapes, kernels in Triton's interpreter")
    parser.add_argument("--repeats", type=int, default=None, help="timed loops per measurement (default 30; dry run 2)")
    args = parser.parse_args(argv)
    if args.dry_run:
        sizes, device, repeats = DRY_SIZES, torch.device("cpu"), args.repeats or 2
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --dry-run to exercise the code on CPU")
        sizes, device, repeats = GPU_SIZES, torch.device("cuda"), args.repeats or 30
    with interpreter_environment(args.dry_run), tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        results = run_suite(sizes, device, repeats, Path(tmp))
    write_text_atomic(args.out, json.dumps(results, indent=2))
    markdown = format_markdown(results)
    write_text_atomic(args.out.with_suffix(".md"), markdown)
    print(markdown)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0 if results["all_checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
