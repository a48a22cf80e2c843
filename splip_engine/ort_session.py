"""ONNX Runtime sessions on a device, with the provider they really got checked.

ONNX Runtime falls back to CPU when the CUDA provider cannot load (CPU-only `onnxruntime`
package, missing CUDA / cuDNN libraries): `InferenceSession` only warns, and
`get_available_providers()` lists what the package was built with, not what loads. So after
creating a session we read `session.get_providers()`:
- `strict=True` (the user asked for `device="cuda"`): a fallback is a SpLIPError naming the
  providers, the onnxruntime version and the fix;
- `strict=False` (`device="auto"` chose cuda): a fallback is one warning, and the session runs
  on CPU (`session_device` says so), because auto must run wherever it can.
Shared by export (its parity gate runs on the provider the engine is served with) and the runtime.
"""
from __future__ import annotations

import logging
from typing import Any

from splip_engine.errors import SpLIPError
from splip_engine.optional import import_onnxruntime

logger = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
"""device -> the ONNX Runtime execution provider that runs there."""
CUDA_OPTIONS = {"use_tf32": "0"}
"""CUDA provider options: float32 MatMuls in IEEE float32, as the fp32 parity gate (1e-4) assumes."""


def ort_cuda_built() -> bool:
    """True when the installed onnxruntime package has the CUDA provider (onnxruntime-gpu)."""
    try:
        ort = import_onnxruntime()
    except SpLIPError:
        return False
    return PROVIDERS["cuda"] in ort.get_available_providers()


def session_providers(device: str) -> list[Any]:
    """The providers list for InferenceSession on `device` (CPU always last, for unsupported ops)."""
    if device not in PROVIDERS:
        raise SpLIPError(f"device={device!r}: ONNX Runtime runs on one of {sorted(PROVIDERS)}")
    if device == "cuda":
        return [(PROVIDERS["cuda"], dict(CUDA_OPTIONS)), PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


def open_session(model: str | bytes, device: str, options=None, strict: bool = True, what: str = "the graph"):
    """An InferenceSession of `model` (a path or serialized bytes) on `device`, its providers
    checked as the module docstring says. Returns (session, the device it really runs on)."""
    ort = import_onnxruntime()
    session = ort.InferenceSession(model, options, providers=session_providers(device))
    return session, check_providers(session, device, strict, what)


def check_providers(session, device: str, strict: bool, what: str) -> str:
    """The device `session` really runs on; a CUDA -> CPU fallback raises (strict) or warns."""
    wanted = PROVIDERS[device]
    got = list(session.get_providers())
    if got and got[0] == wanted:
        return device
    ort = import_onnxruntime()
    message = (f"ONNX Runtime {ort.__version__} could not run {what} on {device}: the session got providers {got}, "
               f"not {wanted} (available in this package: {ort.get_available_providers()})")
    if strict:
        raise SpLIPError(f"{message}; install onnxruntime-gpu matching your CUDA version "
                         "(pip install 'splip-engine[gpu]') or use --device cpu")
    logger.warning("%s; running on cpu instead", message)
    return "cpu"
