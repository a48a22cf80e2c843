"""`backend="auto"` on CPU: the fastest variant of an engine dir that passes its parity gate on
this CPU, decided once per (engine, CPU, runtime versions) and cached.

Variants: ONNX Runtime on the dir's ONNX graphs (fp32, or int8 dynamic / static as exported),
OpenVINO f32 and, where the CPU computes bf16 (cpu_features), bf16 on the fp32 graphs, and
OpenVINO int8 on the NNCF IR of a calibrated export. Each candidate is opened (its load gate
runs), then timed at batch 1 and 16 (a short warm-up, then the median of a few calls); the
winner has the lowest geometric mean of per-image time over the two batches. The decision is
cached in the user cache dir ($SPLIP_ENGINE_CACHE, else $XDG_CACHE_HOME/splip-engine, else
~/.cache/splip-engine) under the engine's hash, keyed by CPU model + ISA flags and the runtime
versions: another CPU (or OpenVINO release) decides again. $SPLIP_CPU_ENGINE=BACKEND[:PRECISION]
(e.g. `openvino:f32`, `onnxruntime`) overrides the choice. One info line states it and its numbers.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.io_utils import write_text_atomic
from splip_engine.optional import is_installed
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.cpu_features import CpuFeatures, read_cpu_features

logger = logging.getLogger(__name__)

TIMING_BATCHES = (1, 16)
TIMING_CALLS = 3
"""Timed calls per batch after one warm-up call: enough to rank engines 10%+ apart."""
OVERRIDE_ENV = "SPLIP_CPU_ENGINE"
CACHE_ENV = "SPLIP_ENGINE_CACHE"

Variant = tuple[str, str]
"""(backend, precision), e.g. ("openvino", "bf16"); precision as the backend names it."""
Opener = Callable[[str, str], Encoder]
"""(backend, precision) -> the opened (gated) Encoder."""


def variant_name(variant: Variant) -> str:
    return f"{variant[0]} {variant[1]}"


def cpu_variants(manifest: dict[str, Any], features: CpuFeatures) -> list[Variant]:
    """The CPU engines this engine dir can run with what is installed here, on this CPU."""
    from splip_engine.runtime.openvino_backend import openvino_graphs

    variants: list[Variant] = []
    precision = manifest.get("precision", "fp32")
    has_onnx = any(name.endswith(".onnx") for name in manifest.get("files", {}))
    if has_onnx and is_installed("onnxruntime"):
        variants.append(("onnxruntime", precision))
    if is_installed("openvino"):
        if precision == "fp32" and has_onnx:
            variants.append(("openvino", "f32"))
            if features.bf16:
                variants.append(("openvino", "bf16"))
        if openvino_graphs(manifest):
            variants.append(("openvino", "int8"))
    return variants


def cache_dir() -> Path:
    """Where `auto` keeps its decisions (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "splip-engine"


def cache_key(features: CpuFeatures) -> str:
    """The CPU key plus the versions of the runtimes timed (a new release may change the winner)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "none"

    return f"{features.key} | onnxruntime {installed('onnxruntime')} | openvino {installed('openvino')}"


def _cache_file(manifest: dict[str, Any]) -> Path:
    return cache_dir() / f"cpu-auto-{manifest.get('engine_hash', 'unhashed')[:16]}.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def time_variant(encoder: Encoder, batches: tuple[int, ...] = TIMING_BATCHES, calls: int = TIMING_CALLS) -> dict[str, float]:
    """Median seconds per image of `encoder` (sketch tower) at each batch: {"1": s, "16": s}."""
    rng = np.random.default_rng(0)
    per_image = {}
    for batch in batches:
        pixels = rng.standard_normal((batch, 3, encoder.image_size, encoder.image_size), dtype=np.float32)
        encoder.embed_pixels(pixels, "sketch")  # warm-up: shape-specialised kernels, allocations
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            encoder.embed_pixels(pixels, "sketch")
            seconds.append(time.perf_counter() - start)
        per_image[str(batch)] = float(np.median(seconds)) / batch
    return per_image


def _score(per_image: dict[str, float]) -> float:
    return float(np.exp(np.mean(np.log(list(per_image.values())))))


def decide(variants: list[Variant], open_variant: Opener) -> dict[str, Any]:
    """Open, gate and time each variant; the decision {"backend", "precision", "timings", "refused"}."""
    timings, refused = {}, {}
    for variant in variants:
        try:
            with open_variant(*variant) as encoder:
                timings[variant_name(variant)] = time_variant(encoder)
        except SpLIPError as e:  # a failed gate (or a broken runtime) rules the variant out, with its reason
            refused[variant_name(variant)] = str(e)
    if not timings:
        raise SpLIPError("backend='auto' on cpu: no engine variant passed its gate here: "
                         + "; ".join(f"{k}: {v}" for k, v in refused.items()))
    best = min(timings, key=lambda name: _score(timings[name]))
    backend, precision = best.split(" ", 1)
    return {"backend": backend, "precision": precision, "timings": timings, "refused": refused,
            "decided": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def describe(decision: dict[str, Any], features: CpuFeatures, where: str) -> str:
    """The one info line: the choice, the CPU, and the per-image times that decided it."""
    ms = {name: "/".join(f"{1e3 * t[b]:.2f}" for b in sorted(t, key=int)) for name, t in decision["timings"].items()}
    batches = "/".join(sorted(next(iter(decision["timings"].values())), key=int))
    others = "; ".join(f"{name} {value}" for name, value in ms.items())
    refused = "".join(f"; {name} refused ({reason[:80]})" for name, reason in decision.get("refused", {}).items())
    chosen = f"{decision['backend']} {decision['precision']}"
    return (f"backend=auto on cpu ({features.key}): {chosen}, ms per image at batch {batches}: {others}{refused} "
            f"[{where}; override with {OVERRIDE_ENV}=BACKEND:PRECISION]")


def _override(variants: list[Variant]) -> Variant | None:
    wanted = os.environ.get(OVERRIDE_ENV, "").strip()
    if not wanted:
        return None
    backend, _, precision = wanted.partition(":")
    matches = [v for v in variants if v[0] == backend and (not precision or v[1] == precision)]
    if not matches:
        raise SpLIPError(f"{OVERRIDE_ENV}={wanted!r} names no engine variant this engine dir has here; "
                         f"choose one of {', '.join(f'{b}:{p}' for b, p in variants)}")
    return matches[-1]


def choose_cpu_variant(manifest: dict[str, Any], open_variant: Opener,
                       features: CpuFeatures | None = None) -> tuple[Variant, str]:
    """The variant `auto` runs on this CPU and the info line saying why (see the module docstring)."""
    features = features or read_cpu_features()
    variants = cpu_variants(manifest, features)
    if not variants:
        raise SpLIPError("no CPU runtime for this engine: pip install 'splip-engine[cpu]'")
    override = _override(variants)
    if override:
        return override, f"backend=auto on cpu: {variant_name(override)} ({OVERRIDE_ENV})"
    if len(variants) == 1:
        return variants[0], f"backend=auto on cpu ({features.key}): {variant_name(variants[0])}, the only CPU variant"
    path, key = _cache_file(manifest), cache_key(features)
    cached = _read_cache(path)
    decision = cached.get(key)
    if isinstance(decision, dict) and (decision.get("backend"), decision.get("precision")) in variants:
        return (decision["backend"], decision["precision"]), describe(decision, features, f"cached in {path}")
    decision = decide(variants, open_variant)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({**cached, key: decision}, indent=2) + "\n")
        where = f"decided now, cached in {path}"
    except OSError as e:  # a read-only home must not stop serving: decide again next time
        where = f"decided now, not cached ({e})"
    return (decision["backend"], decision["precision"]), describe(decision, features, where)
