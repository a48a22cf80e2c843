"""load_engine: open an engine dir (or a checkpoint dir) with the best backend that runs here.

Device and backend are chosen together (`select_engine`):
- `device="cuda"` needs a visible GPU, else a SpLIPError; `device="cpu"` is taken as given.
- `device="auto"` picks cuda only when a GPU is visible AND a backend that runs there is
  installed for this engine: TensorRT with plans, ONNX Runtime with its CUDA provider
  (onnxruntime-gpu), or torch with the engine's checkpoint (always installed). Otherwise cpu,
  with one info line saying why (e.g. a GPU machine with the CPU onnxruntime package and
  `backend="onnxruntime"`).
- `backend="auto"` then takes, on cuda: TensorRT > ONNX Runtime CUDA > torch (fp16 engines run
  fp16); on cpu: the fastest gated variant of ONNX Runtime / OpenVINO (f32, bf16 where the CPU has
  it, int8) on this CPU, decided once and cached (runtime/cpu_auto.py), torch without ONNX graphs.
  `backend="openvino"` runs on cpu only, in `precision` (auto: int8 for a calibrated int8 dir,
  else bf16 where the CPU has it, else f32).
ONNX Runtime sessions are checked after creation (splip_engine/ort_session.py): a silent CPU
fallback is an error when cuda was asked for, a warning when auto chose it.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """Where torch runs (training, the torch engine): `auto` -> cuda when a GPU is visible, else
    cpu; `cuda` without a GPU is an error."""
    if device not in DEVICES:
        raise SpLIPError(f"device={device!r}: choose one of {DEVICES}")
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        raise SpLIPError("device='cuda' but no CUDA GPU is visible; use --device cpu")
    return device


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _runs_on_cuda(backend: str, manifest: dict | None, has_checkpoint: bool) -> str | None:
    """None when `backend` can run this engine on a (visible) GPU here, else why not."""
    if backend == "openvino":
        return "the OpenVINO backend runs on the CPU"
    if backend == "torch":
        return None if has_checkpoint else "the engine dir has no checkpoint/ for the torch backend"
    if manifest is None:
        return f"a checkpoint dir has no {backend} engine"
    if backend == "tensorrt":
        from splip_engine.export.tensorrt import tensorrt_unavailable

        if not (manifest.get("tensorrt") or {}).get("plans"):
            return "the engine has no TensorRT plans"
        return tensorrt_unavailable()
    from splip_engine.ort_session import ort_cuda_unusable

    if not any(name.endswith(".onnx") for name in manifest.get("files", {})):
        return "the engine has no ONNX graphs"
    return ort_cuda_unusable()  # a session really opened there, not the package's provider list


def _cuda_order(manifest: dict | None, has_checkpoint: bool) -> list[str]:
    return [b for b in ("tensorrt", "onnxruntime", "torch") if _runs_on_cuda(b, manifest, has_checkpoint) is None]


def _cpu_backend(manifest: dict | None) -> str:
    if manifest is not None and _has_module("onnxruntime") and any(f.endswith(".onnx") for f in manifest["files"]):
        return "onnxruntime"
    return "torch"


def select_engine(manifest: dict | None, has_checkpoint: bool, backend: str = "auto",
                  device: str = "auto") -> tuple[str, str]:
    """(backend, device) for an engine (`manifest` None: a bare checkpoint dir), as the module
    docstring says."""
    if backend not in BACKENDS:
        raise SpLIPError(f"backend={backend!r}: choose one of {BACKENDS}")
    if device not in DEVICES:
        raise SpLIPError(f"device={device!r}: choose one of {DEVICES}")
    if device == "cuda":
        resolve_device("cuda")
    if device == "auto":
        if not _cuda_available():
            device = "cpu"
        else:
            candidates = _cuda_order(manifest, has_checkpoint) if backend == "auto" else \
                [backend] if _runs_on_cuda(backend, manifest, has_checkpoint) is None else []
            if candidates:
                device = "cuda"
            else:
                why = (_runs_on_cuda(backend, manifest, has_checkpoint) if backend != "auto"
                       else "no backend that runs there is installed for this engine")
                logger.info("device=auto: a CUDA GPU is visible but %s; running on cpu", why)
                device = "cpu"
    if backend == "auto":
        if device == "cuda":
            order = _cuda_order(manifest, has_checkpoint)
            if not order:
                raise SpLIPError("device='cuda' but no backend can run this engine there: install onnxruntime-gpu "
                                 "or TensorRT (pip install 'splip-engine[gpu]'), or re-export it with its checkpoint")
            backend = order[0]
        else:
            backend = _cpu_backend(manifest)
    if backend == "tensorrt" and device != "cuda":
        raise SpLIPError("backend='tensorrt' needs device='cuda' and a GPU")
    if backend == "openvino" and device != "cpu":
        raise SpLIPError("backend='openvino' runs on the CPU: use device='cpu'")
    return backend, device


def _check_runtime_fields(path: Path, manifest: dict) -> None:
    """The manifest fields every backend sizes its inputs and outputs by must be positive ints."""
    for key in ("embedding_dim", "image_size"):
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpLIPError(f"{path}/manifest.json has {key}={value!r}, not a positive integer; "
                             "re-export the engine with `splip-engine export`")


def load_engine(path: str | Path, backend: str = "auto", device: str = "auto", batch_size: int = 32,
                verify: bool = True, torch_options=None, precision: str = "auto") -> Encoder:
    """Open `path` -- an engine dir from `splip-engine export`, or a SpLIP checkpoint dir (torch
    backend only) -- and return an Encoder. The manifest's format and files' sha256 are checked.
    `torch_options`: a runtime.torch_backend.TorchOptions for the torch backend (precision,
    torch.compile, CUDA graphs, Triton attention). `precision`: the OpenVINO backend's (f32, bf16,
    int8 or auto)."""
    from splip_engine.checkpoint import CONFIG_FILE, load_checkpoint

    path = Path(path)
    if backend not in BACKENDS:
        raise SpLIPError(f"backend={backend!r}: choose one of {BACKENDS}")
    if device not in DEVICES:
        raise SpLIPError(f"device={device!r}: choose one of {DEVICES}")
    if not path.is_dir():
        raise SpLIPError(f"engine dir {path} does not exist; create one with `splip-engine export`")
    if not (path / "manifest.json").is_file() and (path / CONFIG_FILE).is_file():
        if backend not in ("auto", "torch"):
            raise SpLIPError(f"{path} is a checkpoint, not an engine dir: export it first for backend={backend!r}")
        from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest

        _, device = select_engine(None, True, "torch", device)
        model = load_checkpoint(path)
        return TorchEncoder(model, model_manifest(model), device=device, batch_size=batch_size, options=torch_options)

    from splip_engine.export.manifest import read_manifest, verify_files

    manifest = read_manifest(path)
    _check_runtime_fields(path, manifest)
    if verify:
        verify_files(path, manifest)
    requested_device = device
    requested_backend = backend
    backend, device = select_engine(manifest, (path / "checkpoint").is_dir(), backend, device)
    if requested_backend == "auto" and device == "cpu" and backend != "torch":
        from splip_engine.runtime.cpu_auto import choose_cpu_variant

        def open_variant(variant_backend: str, variant_precision: str) -> Encoder:
            return _OPENERS[variant_backend](path, manifest, device, batch_size, False, torch_options,
                                             variant_precision)

        (backend, precision), line = choose_cpu_variant(manifest, open_variant)
        logger.info("%s", line)
    logger.info("loading %s with backend=%s device=%s", path, backend, device)
    return _OPENERS[backend](path, manifest, device, batch_size, requested_device == "cuda", torch_options, precision)


def _open_torch(path: Path, manifest: dict, device: str, batch_size: int, strict: bool, torch_options,
                precision: str = "auto") -> Encoder:
    from splip_engine.checkpoint import load_checkpoint
    from splip_engine.runtime.torch_backend import TorchEncoder

    if not (path / "checkpoint").is_dir():
        raise SpLIPError(f"{path} has no checkpoint/ for the torch backend; re-export it")
    return TorchEncoder(load_checkpoint(path / "checkpoint"), manifest, device=device, batch_size=batch_size,
                        options=torch_options)


def _open_onnxruntime(path: Path, manifest: dict, device: str, batch_size: int, strict: bool, torch_options,
                      precision: str = "auto") -> Encoder:
    from splip_engine.runtime.ort_backend import OrtEncoder

    return OrtEncoder(path, manifest, device=device, batch_size=batch_size, strict=strict)


def _open_tensorrt(path: Path, manifest: dict, device: str, batch_size: int, strict: bool, torch_options,
                   precision: str = "auto") -> Encoder:
    from splip_engine.runtime.tensorrt_backend import TensorRTEncoder

    return TensorRTEncoder(path, manifest, batch_size=batch_size)


def _open_openvino(path: Path, manifest: dict, device: str, batch_size: int, strict: bool, torch_options,
                   precision: str = "auto") -> Encoder:
    from splip_engine.runtime.openvino_backend import OpenVinoEncoder

    return OpenVinoEncoder(path, manifest, precision=precision, batch_size=batch_size)


_OPENERS = {"torch": _open_torch, "onnxruntime": _open_onnxruntime, "openvino": _open_openvino,
            "tensorrt": _open_tensorrt}
