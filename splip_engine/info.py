"""Environment report: versions, devices and which optional backends are usable."""
from __future__ import annotations

import importlib
import platform
from typing import Any

from splip_engine._version import __version__
from splip_engine.errors import SpLIPError


def _version_of(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as e:  # an optional backend may fail to import in many ways
        return f"not available ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"


def collect_info() -> dict[str, Any]:
    """Versions of the engine and its backends, CUDA devices and ONNX Runtime providers."""
    import torch

    info: dict[str, Any] = {
        "splip_engine": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "open_clip": _version_of("open_clip"),
        "onnx": _version_of("onnx"),
        "onnxruntime": _version_of("onnxruntime"),
        "openvino": _version_of("openvino"),
        "nncf": _version_of("nncf"),
        "tensorrt": _version_of("tensorrt"),
        "triton": _version_of("triton"),
        "faiss": _version_of("faiss"),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": torch.get_num_threads(),
    }
    try:
        from splip_engine.optional import import_onnxruntime

        onnxruntime = import_onnxruntime()
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except SpLIPError:  # not installed
        info["onnxruntime_providers"] = []
    info.update(cpu_info())
    return info


def cpu_info(engine_dir: str | None = None) -> dict[str, Any]:
    """The CPU features that decide the CPU engine, and what `backend="auto"` picks on it: for
    `engine_dir`, its decision (timed now unless cached), else the candidates of a plain export."""
    from splip_engine.runtime.cpu_auto import cpu_variants, variant_name
    from splip_engine.runtime.cpu_features import read_cpu_features

    features = read_cpu_features()
    info: dict[str, Any] = {
        "cpu_model": features.model,
        "cpu_features": features.names(),
        "cpu_bf16": features.bf16,
        "cpu_int8_dot_product": features.int8,
        "openvino_capabilities": list(features.openvino),
    }
    if engine_dir is None:
        candidates = [variant_name(v) for v in cpu_variants({"precision": "fp32", "files": {"sketch.onnx": {}}},
                                                             features)]
        info["cpu_auto"] = (f"fastest gated of {', '.join(candidates)} (timed at first load, cached per CPU); "
                            "pass --engine DIR for its decision")
        return info
    from splip_engine.runtime.cpu_auto import choose_cpu_variant
    from splip_engine.runtime.loader import load_engine
    from splip_engine.export.manifest import read_manifest

    def open_variant(backend: str, precision: str):
        return load_engine(engine_dir, backend=backend, device="cpu", precision=precision)

    _, line = choose_cpu_variant(read_manifest(engine_dir), open_variant, features)
    info["cpu_auto"] = line
    return info
