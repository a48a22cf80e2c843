"""The bench runner behind `splip-engine bench`: encoder throughput and latency per backend and
batch, search latency and recall vs gallery size, the embedding job with decoding, end-to-end
query latency and peak memory, all measured in one process (ratios side by side), written as
JSON and as a Markdown table. The pytest-benchmark suites in benchmarks/ time the same calls."""
from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from splip_engine.bench_cpu import ENGINE_DIR_ENGINES, BenchEngineDirs
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.cpu_features import read_cpu_features
from splip_engine.runtime.embed_job import peak_rss_mb  # one helper for every report

logger = logging.getLogger(__name__)

Embedder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; `quick()` is the < 5 minute subset."""

    clip_model: str = "ViT-B-32"
    threads: int = 2
    batches: tuple[int, ...] = (1, 8, 32, 128)
    modalities: tuple[str, ...] = ("sketch", "photo")
    engines: tuple[str, ...] = ("torch_fp32", "torch_compiled", "ort_fp32", "ort_fp16", "ort_int8")
    rounds: int = 5
    latency_rounds: int = 50
    search_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    search_kinds: tuple[str, ...] = ("flat", "ivfpq", "hnsw")
    hnsw_max: int = 100_000
    embed_images: int = 512
    e2e_gallery: int = 100_000
    e2e_queries: int = 30

    @classmethod
    def gpu(cls) -> "BenchConfig":
        """The CUDA encoder table: eager torch fp32 and the torch engine's CUDA variants (plus ONNX
        Runtime CUDA where onnxruntime-gpu is installed), host arrays in and out; search and the
        embedding job as in the CPU bench. Device-resident numbers: benchmarks/gpu_suite.py."""
        from splip_engine.ort_session import ort_cuda_unusable

        engines = TORCH_CUDA_ENGINES + (("ort_cuda_fp16",) if ort_cuda_unusable() is None else ())
        return cls(batches=(1, 64, 256), modalities=("sketch",), engines=engines, threads=8, rounds=5,
                   latency_rounds=50, search_sizes=(1_000_000,), search_kinds=("flat",))

    @classmethod
    def cpu(cls) -> "BenchConfig":
        """The CPU engine table: torch, ONNX Runtime fp32 / int8 dynamic / int8 static, OpenVINO
        f32 / bf16 / int8, `auto`'s pick and the peers a user would run instead (bench_cpu.py);
        the embedding job and end-to-end query with ORT fp32 (before) and `auto` (after)."""
        from splip_engine.bench_cpu import CPU_ENGINES, cpu_engine_names

        return cls(batches=(1, 16, 64), modalities=("sketch",), engines=cpu_engine_names(CPU_ENGINES), rounds=8,
                   latency_rounds=20, search_sizes=(100_000,), search_kinds=("flat", "ivfpq"), embed_images=256)

    @classmethod
    def quick(cls) -> "BenchConfig":
        return cls(batches=(1, 16), modalities=("sketch",), engines=("torch_fp32", "ort_fp32", "ort_fp16", "ort_int8"),
                   rounds=3, latency_rounds=20, search_sizes=(100_000,),
                   search_kinds=("flat", "ivfpq"), embed_images=128, e2e_queries=15)


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, cores, thread count and library versions of this run."""
    import torch

    from splip_engine.optional import import_onnxruntime

    onnxruntime = import_onnxruntime()

    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpu_flags": read_cpu_features().names(), "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def source_commit() -> str | None:
    """The git commit of the checkout this package runs from (None for an installed wheel, also
    one inside another repository's tree), so a results file says which code it measured."""
    import subprocess

    checkout = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        found = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, check=False)
        return found.stdout.strip() if found.returncode == 0 else ""

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != checkout:
        return None
    return git("rev-parse", "HEAD") or None


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best fp32 GFLOP/s of an n x n matmul with `threads` threads, per library: torch (MKL here)
    and ONNX Runtime's MLAS (the engines' own GEMM; MKL is slower on AMD CPUs)."""
    import onnx.helper as oh
    import torch
    from onnx import TensorProto

    from splip_engine.optional import import_onnxruntime

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    torch_s = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))

    ort = import_onnxruntime()
    spec = [oh.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "abc"]
    graph = oh.make_graph([oh.make_node("MatMul", ["a", "b"], ["c"])], "matmul", spec[:2], spec[2:])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString(),
                                   options, providers=["CPUExecutionProvider"])
    feeds = {"a": a.numpy(), "b": b.numpy()}
    session.run(None, feeds)
    ort_s = min(_timed(lambda: session.run(None, feeds)) for _ in range(repeats))
    return {"torch": 2 * n ** 3 / torch_s / 1e9, "onnxruntime": 2 * n ** 3 / ort_s / 1e9}


def cuda_matmul_tflops(dtype: str = "bfloat16", n: int = 8192, repeats: int = 10) -> float:
    """Best TFLOP/s of an n x n x n matmul on the current CUDA GPU (CUDA events): the measured
    ceiling GPU rows are a percentage of (bf16 by default, the tensor cores' dense rate)."""
    import torch

    a = torch.randn(n, n, device="cuda").to(getattr(torch, dtype))
    b = torch.randn(n, n, device="cuda").to(getattr(torch, dtype))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 / best / 1e12


def peak_matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """The CPU's practical ceiling: the best library's fp32 matmul GFLOP/s (see matmul_gflops)."""
    return max(matmul_gflops(threads, n, repeats).values())


def encoder_gmacs(model, modality: str = "sketch") -> float:
    """MACs per image of `model.encode(., modality)` (matmul/conv/attention; 1 MAC = 2 FLOP)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(2, 3, model.image_size, model.image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.encode(images, modality)
    return counter.get_total_flops() / 2 / 2 / 1e9


def torch_engine_variants() -> dict[str, tuple[str, Any]]:
    """Bench engine name -> (device, runtime TorchOptions) of the torch engine variants."""
    from splip_engine.runtime.torch_backend import TorchOptions

    return {
        "torch_compiled": ("cpu", TorchOptions(compile=True)),
        "torch_cuda_fp32": ("cuda", TorchOptions(precision="fp32", cuda_graphs=False)),
        "torch_cuda_fp16": ("cuda", TorchOptions(precision="fp16", cuda_graphs=False)),
        "torch_cuda_bf16": ("cuda", TorchOptions(precision="bf16", cuda_graphs=False)),
        "torch_cuda_fp16_graphs": ("cuda", TorchOptions(precision="fp16")),
        "torch_cuda_fp16_compiled_graphs": ("cuda", TorchOptions(precision="fp16", compile=True)),
        "torch_cuda_fp16_triton_graphs": ("cuda", TorchOptions(precision="fp16", kernels="triton")),
    }


TORCH_CUDA_ENGINES = ("torch_cuda_fp32", "torch_cuda_fp16", "torch_cuda_bf16", "torch_cuda_fp16_graphs",
                      "torch_cuda_fp16_compiled_graphs", "torch_cuda_fp16_triton_graphs")
"""The torch CUDA engine's variants, in the order the tables list them."""


def torch_engine(model, options, device: str, batch_size: int):
    """The runtime's torch engine (TorchEncoder) for a copy of `model` (the engine casts and moves
    its model) with `options`; its load-time parity gate runs unless the options turn it off."""
    import copy

    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest

    return TorchEncoder(copy.deepcopy(model), model_manifest(model), device=device, batch_size=batch_size,
                        options=options)


def build_embedders(model, modality: str, engines: tuple[str, ...], threads: int,
                    max_batch: int = 128, engine_dirs: BenchEngineDirs | None = None) -> dict[str, Embedder]:
    """name -> embedder (pixels (n, 3, S, S) float32 host array -> (n, D)) for one tower: eager
    torch, the torch engine's variants (CPU and CUDA, see _torch_engines), ONNX Runtime
    (`ort_<precision>` on CPU, `ort_cuda_<precision>` on CUDA) and the CPU rows built from
    exported engine dirs (bench_cpu.ENGINE_DIR_ENGINES; `auto` is named after its pick)."""
    import torch

    from splip_engine.export.graph import export_tower
    from splip_engine.export.parity import onnxruntime_embedder, torch_embedder
    from splip_engine.export.precision import convert_precision

    torch.set_num_threads(threads)
    variants = torch_engine_variants()
    embedders: dict[str, Embedder] = {}
    fp32 = export_tower(model, modality) if any(e.startswith("ort_") for e in engines) else None
    for name in engines:
        if name in ENGINE_DIR_ENGINES:
            if engine_dirs is None:
                raise ValueError(f"engine {name!r} needs exported engine dirs (bench_cpu.BenchEngineDirs)")
            embed = engine_dirs.embedder(name, modality)
            embedders[f"auto ({engine_dirs.auto_pick})" if name == "auto" else name] = embed
        elif name == "torch_fp32":
            embedders[name] = torch_embedder(model, modality)
        elif name in variants:
            device, options = variants[name]
            engine = torch_engine(model, options, device, max_batch)
            embedders[name] = lambda pixels, e=engine: e.embed_pixels(pixels, modality)
        elif name.startswith("ort_cuda_"):
            embedders[name] = onnxruntime_embedder(convert_precision(fp32, name[9:]), threads, spinning=False,
                                                   device="cuda")
        elif name.startswith("ort_"):
            embedders[name] = onnxruntime_embedder(convert_precision(fp32, name[4:]), threads, spinning=False)
        else:
            raise ValueError(f"unknown engine {name!r}")
    return embedders


def compiled_torch_embedder(model, modality: str) -> Embedder:
    """The torch engine with `torch.compile` on CPU (inductor, static shapes per batch bucket:
    compiled in the warm-up), ungated: an embedder over host arrays."""
    from splip_engine.runtime.torch_backend import TorchOptions

    engine = torch_engine(model, TorchOptions(compile=True, parity_gate=False), "cpu", 128)
    return lambda pixels: engine.embed_pixels(pixels, modality)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_SETTLE_MAX_BATCH = 4
"""Largest batch whose call is short enough (< ~0.2 s on ViT-B/32) for a switch's transient to show."""


def time_interleaved(embedders: dict[str, Embedder], image_size: int, batch: int, rounds: int,
                     seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each embedder on one (batch, 3, S, S) input, round-robin so that
    machine drift hits every engine alike (ratios from one run are what we compare). At small
    batches each timed call follows an untimed one of the same engine: the previous engine's
    thread pool is still winding down (spinning) right after a switch, which would tax
    whichever engine comes next."""
    pixels = np.random.default_rng(seed).standard_normal((batch, 3, image_size, image_size), dtype=np.float32)
    for embed in embedders.values():  # warm-up: allocations, first-run graph planning
        embed(pixels)
    times: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(rounds):
        for name, embed in embedders.items():
            if batch <= _SETTLE_MAX_BATCH:
                embed(pixels)
            times[name].append(_timed(lambda: embed(pixels)))
    return times


def parity_vs_torch(model, modality: str, embedders: dict[str, Embedder]) -> dict[str, dict[str, float]]:
    """Per engine: min cosine and top-10 agreement vs eager fp32 PyTorch on the export probe batch."""
    from splip_engine.export import parity

    probe = parity.probe_images(model.image_size)
    reference = parity.embed_batched(parity.torch_embedder(model, modality), probe)
    reports = {name: parity.compare(reference, parity.embed_batched(embed, probe), {})
               for name, embed in embedders.items()}
    return {name: {"min_cosine": r["min_cosine"], "top10_agreement": r["top10_agreement"]}
            for name, r in reports.items()}


def encoder_rows(cfg: BenchConfig, model,
                 engine_dirs: BenchEngineDirs | None = None) -> tuple[list[dict], dict[str, float]]:
    """Throughput / latency rows for every engine x modality x batch, with ratios vs torch fp32."""
    from tqdm import tqdm

    gmacs = {m: encoder_gmacs(model, m) for m in cfg.modalities}
    rows = []
    progress = tqdm(total=len(cfg.modalities) * len(cfg.batches), desc="bench encoders", unit="batch size")
    for modality in cfg.modalities:
        embedders = build_embedders(model, modality, cfg.engines, cfg.threads, max(cfg.batches), engine_dirs)
        agreement = parity_vs_torch(model, modality, embedders)
        for batch in cfg.batches:
            rounds = cfg.latency_rounds if batch == 1 else cfg.rounds
            times = time_interleaved(embedders, model.image_size, batch, rounds)
            base = next((name for name in ("torch_fp32", "torch_cuda_fp32") if name in times), None)
            reference = float(np.median(times[base])) if base else None
            for name, t in times.items():
                seconds = float(np.median(t))
                rows.append({"engine": name, "modality": modality, "batch": batch, "img_per_s": batch / seconds,
                             "p50_ms": 1e3 * float(np.percentile(t, 50)), "p99_ms": 1e3 * float(np.percentile(t, 99)),
                             "gflop_per_s": 2 * gmacs[modality] * batch / seconds, "rounds": rounds,
                             "vs_torch_fp32": reference / seconds if reference else None, **agreement[name]})
            logger.info("bench encoders: %s batch %d done", modality, batch)
            progress.update()
        del embedders
    progress.close()
    return rows, gmacs


def search_rows(cfg: BenchConfig, dim: int = 512, k: int = 100, batch: int = 64) -> list[dict]:
    """Latency of a batch of 64 sketch-like queries, top-100, and recall@100 vs exact search, per
    gallery size and index kind (approximate kinds tuned for recall >= 0.95 on other queries)."""
    from splip_engine.index import GalleryIndex, recall_at_k, synthetic_embeddings, synthetic_queries, tune_search

    queries = synthetic_queries(2 * batch, dim, 1000)[0]
    tune, timed = queries[:batch], queries[batch:]
    rows = []
    for n in cfg.search_sizes:
        gallery = synthetic_embeddings(n, dim, 1000, dtype=np.float16)[0]
        ids = [f"photo{i}" for i in range(n)]
        exact = GalleryIndex.build(gallery, ids, "flat")
        for kind in cfg.search_kinds:
            if kind == "hnsw" and n > cfg.hnsw_max:
                continue
            start = time.perf_counter()
            index = exact if kind == "flat" else GalleryIndex.build(gallery, ids, kind)
            build_s = time.perf_counter() - start
            if kind != "flat":
                tune_search(index, exact, tune, k, target_recall=0.95)
            index.search(timed, k)
            batch_s = min(_timed(lambda: index.search(timed, k)) for _ in range(3))
            single = [_timed(lambda q=q: index.search(q[None], k)) for q in timed[:16]]
            rows.append({"n": n, "kind": kind, "batch_ms": 1e3 * batch_s, "per_query_ms": 1e3 * batch_s / batch,
                         "single_query_p50_ms": 1e3 * float(np.median(single)),
                         "recall_at_100": 1.0 if kind == "flat" else recall_at_k(index, exact, timed, k),
                         "build_s": build_s, "peak_rss_mb": peak_rss_mb()})
            logger.info("bench search: %d %s done", n, kind)
        del gallery, exact
    return rows


def _write_jpegs(directory: Path, count: int, size: int = 256, seed: int = 0) -> None:
    """`count` JPEG photos of smooth random colour fields (realistic decode cost, not noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    base = np.linspace(0, 255, size, dtype=np.float32)
    for i in range(count):
        r, g, b = rng.uniform(0.2, 1.0, 3)
        pixels = np.stack([np.add.outer(base * r, base * g) / 2, np.add.outer(base * b, base[::-1]) / 2,
                           np.add.outer(base[::-1] * g, base * r) / 2], axis=-1)
        Image.fromarray(pixels.astype(np.uint8)).save(directory / f"{i:05d}.jpg", quality=90)


class _EmbedderEncoder(Encoder):
    """A runtime Encoder over one in-memory ONNX Runtime embedder, for the pipeline benchmarks."""

    backend = "onnxruntime"

    def __init__(self, embed: Embedder, model, batch_size: int = 32):
        from splip_engine.runtime.torch_backend import model_manifest

        super().__init__(model_manifest(model), batch_size=batch_size)
        self._embed = embed

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        return self._embed(pixels)


def pipeline_rows(cfg: BenchConfig, model, engine_dirs: BenchEngineDirs | None = None) -> list[dict]:
    """The embedding job with decoding vs the bare encoder on preprocessed pixels (same batch),
    and end-to-end single-query latency: decode + embed + exact search over `e2e_gallery`; with
    ONNX Runtime fp32 and, where the CPU rows were built, with `auto`'s engine (before / after)."""
    ort = {m: build_embedders(model, m, ("ort_fp32",), cfg.threads)["ort_fp32"] for m in ("photo", "sketch")}
    engines = {"ORT fp32": {m: _EmbedderEncoder(embed, model) for m, embed in ort.items()}}
    if engine_dirs is not None and engine_dirs.auto is not None:
        engines[f"auto: {engine_dirs.auto_pick}"] = {"photo": engine_dirs.auto, "sketch": engine_dirs.auto}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        _write_jpegs(images, cfg.embed_images)
        for label, encoders in engines.items():
            rows += _pipeline_rows_of(cfg, model, label, encoders, images, Path(tmp) / label.replace(" ", "_"))
    return rows


def _pipeline_rows_of(cfg: BenchConfig, model, label: str, encoders: dict[str, Encoder], images: Path,
                      store: Path) -> list[dict]:
    """pipeline_rows for one engine (`encoders`: modality -> Encoder)."""
    from splip_engine.index import GalleryIndex, synthetic_embeddings
    from splip_engine.runtime.embed_job import run_embed

    photo = encoders["photo"]
    report = run_embed(photo, images, store, batch_size=32, workers=1, progress=False)
    bare = time_interleaved({"photo": lambda p: photo.embed_pixels(p, "photo")}, model.image_size, 32, cfg.rounds)
    bare_ips = 32 / float(np.median(bare["photo"]))
    rows = [{"case": f"embed job (decode 256px JPEG + {label}, batch 32, 1 decode worker)",
             "img_per_s": report.images_per_s, "bare_encoder_img_per_s": bare_ips,
             "job_vs_bare": report.images_per_s / bare_ips,
             "phases_s": {k: round(v, 2) for k, v in report.timings.items()}, "peak_rss_mb": peak_rss_mb()}]
    gallery = synthetic_embeddings(cfg.e2e_gallery, model.embed_dim, 1000, dtype=np.float16)[0]
    index = GalleryIndex.build(gallery, [f"g{i}" for i in range(len(gallery))], "flat")
    paths = sorted(images.iterdir())[: cfg.e2e_queries]
    latencies = [_timed(lambda p=p: index.search(encoders["sketch"].embed([str(p)], "sketch"), 10)) for p in paths]
    rows.append({"case": f"end-to-end query (decode + {label} + exact top-10 over {cfg.e2e_gallery:,})",
                 "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
                 "p99_ms": 1e3 * float(np.percentile(latencies, 99)), "peak_rss_mb": peak_rss_mb()})
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    """The tables of one bench run."""
    m = results["machine"]
    lines = [f"Machine: {m['cpu']} ({', '.join(m.get('cpu_flags', []))}), {m['cores']} cores, "
             f"{m['threads']} threads; torch {m['torch']}, "
             f"onnxruntime {m['onnxruntime']}. Peak fp32 matmul (2048^2): {results['peak_matmul_gflops']:.0f} GFLOP/s "
             f"(" + ", ".join(f"{k} {v:.0f}" for k, v in results["matmul_gflops"].items()) + ")"
             + (f"; GPU bf16 matmul (8192^3): {results['cuda_bf16_matmul_tflops']:.0f} TFLOP/s (the % column of "
                "CUDA engines)" if "cuda_bf16_matmul_tflops" in results else "") + ".",
             f"FLOP convention: matmul/conv/attention MACs counted by torch's FlopCounterMode, 1 MAC = 2 FLOP; "
             f"SpLIP {results['config']['clip_model']} GMACs/image: "
             + ", ".join(f"{k} {v:.2f}" for k, v in results["gmacs_per_image"].items()) + ".", "",
             "| tower | engine | batch | img/s | p50 ms | p99 ms | GFLOP/s | % of matmul peak | vs torch fp32 "
             "| min cos | top-10 agr. |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["encoders"]:
        ratio = f"{r['vs_torch_fp32']:.2f}x" if r["vs_torch_fp32"] else ""
        on_gpu = r["engine"].startswith(("torch_cuda", "ort_cuda"))
        peak = 1e3 * results["cuda_bf16_matmul_tflops"] if on_gpu else results["peak_matmul_gflops"]
        lines.append(f"| {r['modality']} | {r['engine']} | {r['batch']} | {r['img_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['gflop_per_s']:.0f} | "
                     f"{100 * r['gflop_per_s'] / peak:.0f}% | {ratio} | "
                     f"{r['min_cosine']:.5f} | {r['top10_agreement']:.3f} |")
    lines += ["", "| gallery | index | 64 queries (ms) | per query (ms) | 1 query p50 (ms) | recall@100 | build (s) |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["search"]:
        lines.append(f"| {r['n']:,} | {r['kind']} | {r['batch_ms']:.1f} | {r['per_query_ms']:.2f} | "
                     f"{r['single_query_p50_ms']:.2f} | {r['recall_at_100']:.3f} | {r['build_s']:.1f} |")
    lines += ["", "| pipeline | result |", "| --- | --- |"]
    for r in results["pipeline"]:
        detail = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "case"}
        lines.append(f"| {r['case']} | {json.dumps(detail)} |")
    lines.append(f"\nPeak RSS of the run: {results['peak_rss_mb']:.0f} MiB; wall {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def run_bench(cfg: BenchConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Measure everything `cfg` names; write results.json and results.md into `out` if given."""
    from splip_engine import SpLIPConfig, build_model
    from splip_engine.io_utils import write_text_atomic

    start = time.perf_counter()
    results: dict[str, Any] = {"config": asdict(cfg), "commit": source_commit(), "machine": machine_info(cfg.threads),
                               "matmul_gflops": matmul_gflops(cfg.threads)}
    results["peak_matmul_gflops"] = max(results["matmul_gflops"].values())
    if any(name.startswith(("torch_cuda", "ort_cuda")) for name in cfg.engines):
        results["cuda_bf16_matmul_tflops"] = cuda_matmul_tflops()
    model = build_model(SpLIPConfig(clip_model=cfg.clip_model, pretrained="")).eval()
    with tempfile.TemporaryDirectory(prefix="splip-bench-") as tmp:
        engine_dirs = BenchEngineDirs(model, Path(tmp)) if ENGINE_DIR_ENGINES & set(cfg.engines) else None
        results["encoders"], results["gmacs_per_image"] = encoder_rows(cfg, model, engine_dirs)
        results["search"] = search_rows(cfg)
        results["pipeline"] = pipeline_rows(cfg, model, engine_dirs)
    results["peak_rss_mb"] = peak_rss_mb()
    results["seconds"] = time.perf_counter() - start
    if out is not None:
        out = Path(out)
        write_text_atomic(out / "results.json", json.dumps(results, indent=2))
        write_text_atomic(out / "results.md", render_markdown(results))
    return results
