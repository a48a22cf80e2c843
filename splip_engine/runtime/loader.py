"""load_engine: open an engine dir (or a checkpoint dir) with the best available backend."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; `cuda` without a GPU is an error."""
    if device not in DEVICES:
        raise SpLIPError(f"device={device!r}: choose one of {DEVICES}")
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        raise SpLIPError("device='cuda' but no CUDA GPU is visible; use --device cpu")
    return device


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose_backend(manifest: dict | None, device: str) -> str:
    """auto order: TensorRT (plans present, GPU) > ONNX Runtime (CUDA, then CPU) > torch."""
    if manifest is None:
        return "torch"
    if device == "cuda" and _has_module("tensorrt") and manifest.get("tensorrt", {}).get("plans"):
        return "tensorrt"
    if _has_module("onnxruntime") and any(f.endswith(".onnx") for f in manifest.get("files", {})):
        return "onnxruntime"
    return "torch"


def _check_runtime_fields(path: Path, manifest: dict) -> None:
    """The manifest fields every backend sizes its inputs and outputs by must be positive ints."""
    for key in ("embedding_dim", "image_size"):
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpLIPError(f"{path}/manifest.json has {key}={value!r}, not a positive integer; "
                             "re-export the engine with `splip-engine export`")


def load_engine(path: str | Path, backend: str = "auto", device: str = "auto", batch_size: int = 32,
                verify: bool = True, threads: int = 0) -> Encoder:
    """Open `path` -- an engine dir from `splip-engine export`, or a SpLIP checkpoint dir (torch
    backend only) -- and return an Encoder. The manifest's format and files' sha256 are checked.
    `threads`: ONNX Runtime's intra-op threads (0 = one per core), e.g. to leave cores to decoding."""
    from splip_engine.checkpoint import CONFIG_FILE, load_checkpoint

    path = Path(path)
    if backend not in BACKENDS:
        raise SpLIPError(f"backend={backend!r}: choose one of {BACKENDS}")
    device = resolve_device(device)
    if not path.is_dir():
        raise SpLIPError(f"engine dir {path} does not exist; create one with `splip-engine export`")
    if not (path / "manifest.json").is_file() and (path / CONFIG_FILE).is_file():
        if backend not in ("auto", "torch"):
            raise SpLIPError(f"{path} is a checkpoint, not an engine dir: export it first for backend={backend!r}")
        from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest

        model = load_checkpoint(path)
        return TorchEncoder(model, model_manifest(model), device=device, batch_size=batch_size)

    from splip_engine.export.manifest import read_manifest, verify_files

    manifest = read_manifest(path)
    _check_runtime_fields(path, manifest)
    if verify:
        verify_files(path, manifest)
    if backend == "auto":
        backend = choose_backend(manifest, device)
    logger.info("loading %s with backend=%s device=%s", path, backend, device)
    if backend == "torch":
        from splip_engine.runtime.torch_backend import TorchEncoder

        if not (path / "checkpoint").is_dir():
            raise SpLIPError(f"{path} has no checkpoint/ for the torch backend; re-export it")
        return TorchEncoder(load_checkpoint(path / "checkpoint"), manifest, device=device, batch_size=batch_size)
    if backend == "onnxruntime":
        from splip_engine.runtime.ort_backend import OrtEncoder

        return OrtEncoder(path, manifest, device=device, batch_size=batch_size, threads=threads)
    from splip_engine.runtime.tensorrt_backend import TensorRTEncoder

    if device != "cuda":
        raise SpLIPError("backend='tensorrt' needs device='cuda' and a GPU")
    return TensorRTEncoder(path, manifest, batch_size=batch_size)
