"""The parity gate: an exported engine must reproduce PyTorch (fp32) on a probe batch.

Every engine is compared with the fp32 PyTorch model on the same seeded probe images: max abs
diff and min cosine of the embeddings, and top-10 agreement of a probe retrieval (the first
`PROBE_QUERIES` embeddings query the rest). The bounds per precision live in DEFAULT_THRESHOLDS
only; `resolve_thresholds` applies a caller's overrides (recorded in the manifest).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from splip_engine.errors import SpLIPError
from splip_engine.model import SpLIP
from splip_engine.optional import import_onnxruntime

METRICS = {"max_abs_diff": "max", "min_cosine": "min", "top10_agreement": "min"}
"""Each metric and whether its threshold is an upper (`max`) or lower (`min`) bound."""
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4},  # same math, different kernels: float32 rounding only
    "fp16": {"min_cosine": 0.999, "top10_agreement": 1.0},  # rounding must not move embeddings or neighbours
    "int8": {"top10_agreement": 0.9},  # quantization may reorder near ties, not the neighbours
    # static int8 calibrated on the user's images, gated on held-out ones of them: calibrated
    # ranges keep embeddings close as well (NNCF on ViT-B/32 measured 0.9995 by the issue)
    "int8_static": {"min_cosine": 0.99, "top10_agreement": 0.9},
    # the torch engine's bf16 (8 significant bits, ~8x fp16's rounding): embeddings still within
    # cosine 0.999, but a near tie at the top-10 cut may swap beyond fp16's tie tolerance (measured
    # on random ViT-B/32 and tiny: min cosine 0.99994 / 0.99997, top-10 agreement 0.9875 both)
    "bf16": {"min_cosine": 0.999, "top10_agreement": 0.95},
}
PROBE_SIZE = 40
PROBE_QUERIES = 8
PROBE_BATCH = 8
TOP_K = 10
TIE_TOLERANCE = 1e-3
"""Cosine gap below which two probe neighbours are a tie: fp16 rounding of the embeddings
(~5e-4 per component here) may swap them at the k-th place without the engine being wrong."""

Embedder = Callable[[np.ndarray], np.ndarray]
"""pixels (n, 3, S, S) float32 -> embeddings (n, D) float32: one engine under test."""
EngineEmbedder = Callable[[np.ndarray, str], np.ndarray]
"""(pixels, modality) -> embeddings: a runtime engine's embed_pixels under its load gate."""


def resolve_thresholds(precision: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """DEFAULT_THRESHOLDS[precision] with `overrides` (metric -> bound) applied."""
    bounds = dict(DEFAULT_THRESHOLDS[precision])
    for metric, value in (overrides or {}).items():
        if metric not in METRICS:
            raise SpLIPError(f"unknown parity threshold {metric!r}: choose from {sorted(METRICS)}")
        bounds[metric] = float(value)
    return bounds


def probe_images(image_size: int, n: int = PROBE_SIZE, seed: int = 0) -> np.ndarray:
    """Seeded, image-like probe batch (n, 3, S, S) float32 in normalised pixel units: smooth
    blobs at several scales plus fine noise, so that embeddings differ enough to rank."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, image_size, image_size)
    for cells in (2, 4, 8):
        coarse = torch.randn(n, 3, cells, cells, generator=gen)  # (n, 3, c, c)
        images += F.interpolate(coarse, size=image_size, mode="bilinear", align_corners=False)
    images += 0.3 * torch.randn(n, 3, image_size, image_size, generator=gen)
    return images.numpy().astype(np.float32)


def onnxruntime_embedder(graph, threads: int = 0, spinning: bool = True, device: str = "cpu") -> Embedder:
    """An onnx.ModelProto on ONNX Runtime on `device` (all graph optimisations on); the session's
    providers are checked (a CUDA -> CPU fallback warns and runs on CPU: `embed.device` says
    where it ran). `spinning=False` makes idle pool threads sleep instead of spin: needed when
    other engines share the cores (benchmarks interleave them), at ~4% batch-1 latency when alone."""
    from splip_engine.ort_session import open_session

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ORT's default, one per core
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session, ran_on = open_session(graph.SerializeToString(), device, options, strict=False, what="the probe graph")
    input_name = session.get_inputs()[0].name

    def embed(pixels: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: pixels})[0]

    embed.device = ran_on
    return embed


def serving_device() -> str:
    """Where ONNX Runtime engines will be served on this machine: cuda when a GPU is visible and
    a session really opens on onnxruntime's CUDA provider, else cpu (the export gate runs there)."""
    from splip_engine.ort_session import ort_cuda_unusable

    return "cuda" if torch.cuda.is_available() and ort_cuda_unusable() is None else "cpu"


def torch_embedder(model: SpLIP, modality: str) -> Embedder:
    """The fp32 PyTorch reference for one tower (torch SDPA attention, whatever model.kernels is)."""
    from .graph import using_kernels

    def embed(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad(), using_kernels(model, "torch"):
            return model.encode(torch.from_numpy(pixels).float(), modality).numpy()

    return embed


def embed_batched(embedder: Embedder, pixels: np.ndarray, batch: int = PROBE_BATCH) -> np.ndarray:
    """Run `embedder` over `pixels` (n, 3, S, S) in batches of `batch` -> (n, D) float32."""
    return np.concatenate([embedder(pixels[i:i + batch]) for i in range(0, len(pixels), batch)]).astype(np.float32)


def top_k_agreement(reference: np.ndarray, candidate: np.ndarray, n_queries: int = PROBE_QUERIES,
                    k: int = TOP_K, tie_tolerance: float = TIE_TOLERANCE) -> float:
    """Mean share of each query's candidate top-k gallery neighbours that are right by the
    reference (rows [:n_queries] query rows [n_queries:]): in the reference top-k, or tied with
    its k-th neighbour (reference score within `tie_tolerance` of it)."""
    ref_scores = reference[:n_queries] @ reference[n_queries:].T  # (Q, G)
    cand_scores = candidate[:n_queries] @ candidate[n_queries:].T  # (Q, G)
    k = min(k, ref_scores.shape[1])
    kth = -np.sort(-ref_scores, axis=1)[:, k - 1:k]  # (Q, 1) reference k-th best score
    cand_top = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]  # (Q, k) gallery rows
    right = np.take_along_axis(ref_scores, cand_top, axis=1) >= kth - tie_tolerance  # (Q, k)
    return float(right.mean())


def compare(reference: np.ndarray, candidate: np.ndarray, thresholds: dict[str, float]) -> dict:
    """Parity report of `candidate` vs `reference` embeddings (n, D): metrics, bounds, passed."""
    cosine = np.sum(reference * candidate, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1))  # (n,)
    metrics = {
        "max_abs_diff": float(np.max(np.abs(reference - candidate))),
        "min_cosine": float(np.min(cosine)),
        "top10_agreement": top_k_agreement(reference, candidate),
    }
    failed = [
        f"{m} {metrics[m]:.6g} {'>' if METRICS[m] == 'max' else '<'} {bound:g}"
        for m, bound in thresholds.items()
        if (metrics[m] > bound if METRICS[m] == "max" else metrics[m] < bound) or np.isnan(metrics[m])
    ]
    return {**metrics, "thresholds": dict(thresholds), "n_probe": len(reference),
            "passed": not failed, "failed": failed}


def gate_engine(embed_pixels: EngineEmbedder | dict[str, EngineEmbedder], model: SpLIP, image_size: int,
                thresholds: dict[str, float], engine: str, fix: str,
                images: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Probe batch (or `images`: modality -> pixels) through `embed_pixels(pixels, modality)` vs the
    fp32 eager `model`, per modality: the parity reports, or SpLIPError naming `engine`, the failed
    bounds and `fix` (a runtime's load gate). An engine with several compiled variants (shapes)
    passes a dict label -> embedder: each is gated, and a modality's report is its worst variant's."""
    from splip_engine.config import MODALITIES

    variants = embed_pixels if isinstance(embed_pixels, dict) else {"": embed_pixels}
    probe = probe_images(image_size)
    reports = {}
    for modality in MODALITIES:
        pixels = probe if images is None else images[modality]
        reference = embed_batched(torch_embedder(model, modality), pixels)
        for label, embed in variants.items():
            report = compare(reference, embed(pixels, modality), thresholds)
            if not report["passed"]:
                raise SpLIPError(f"the {engine}{f' ({label})' if label else ''} failed its parity gate on "
                                 f"{modality}: {', '.join(report['failed'])}; {fix}")
            if modality not in reports or report["min_cosine"] < reports[modality]["min_cosine"]:
                reports[modality] = {**report, "variant": label} if label else report
    return reports
