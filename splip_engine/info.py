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
    return info
