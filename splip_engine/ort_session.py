"""ONNX Runtime sessions on a device, with the provider they really got checked.

ONNX Runtime falls back to CPU when the CUDA provider cannot load (CPU-only `onnxruntime`
package, missing CUDA / cuDNN libraries): `InferenceSession` only warns, and
`get_available_providers()` lists what the package was built with, not what loads (a CPU
`onnxruntime` installed beside `onnxruntime-gpu` even hides the CUDA provider, microsoft/onnxruntime#26996).
So a provider counts as usable only when a session really opens on it (`ort_cuda_unusable`), and
after creating a session we read `session.get_providers()`:
- `strict=True` (the user asked for `device="cuda"`): a fallback is a SpLIPError naming the
  providers, the onnxruntime version and the fix;
- `strict=False` (`device="auto"` chose cuda): a fallback is one warning, and the session runs
  on CPU (`session_device` says so), because auto must run wherever it can.
Shared by export (its parity gate runs on the provider the engine is served with) and the runtime.
`run_bound` runs a session on torch tensors in place (IO binding), torch's stream synchronised
first: ONNX Runtime's CUDA streams do not wait for torch's.
"""
from __future__ import annotations

import functools
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
    """True when the installed onnxruntime package lists the CUDA provider (onnxruntime-gpu):
    built in, not necessarily loadable; `ort_cuda_unusable` says whether it really runs."""
    try:
        ort = import_onnxruntime()
    except SpLIPError:
        return False
    return PROVIDERS["cuda"] in ort.get_available_providers()


@functools.lru_cache(maxsize=None)
def ort_cuda_unusable(device_id: int = 0) -> str | None:
    """None when a session really opens and runs on the CUDA provider of GPU `device_id`, else
    why not (package without it, CUDA / cuDNN libraries that do not load, ...). Cached per GPU."""
    try:
        ort = import_onnxruntime()
    except SpLIPError as exc:
        return str(exc)
    if PROVIDERS["cuda"] not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (pip install 'splip-engine[gpu]')"
    try:
        import numpy as np

        session = ort.InferenceSession(_probe_graph(), providers=session_providers("cuda", device_id))
        got = list(session.get_providers())
        if not got or got[0] != PROVIDERS["cuda"]:
            return f"onnxruntime {ort.__version__}: a CUDA session fell back to {got} (CUDA / cuDNN libraries?)"
        session.run(None, {"x": np.ones((1, 4), np.float32)})
    except Exception as exc:  # noqa: BLE001 - any failure to open or run means "not usable", with its reason
        return f"onnxruntime {ort.__version__} could not run a CUDA session: {type(exc).__name__}: {exc}"
    return None


def _probe_graph() -> bytes:
    """A one-node ONNX graph (y = x + x, float32 (1, 4)): what the availability probe opens."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def session_providers(device: str, device_id: int = 0) -> list[Any]:
    """The providers list for InferenceSession on `device` (CPU always last, for unsupported ops)."""
    if device not in PROVIDERS:
        raise SpLIPError(f"device={device!r}: ONNX Runtime runs on one of {sorted(PROVIDERS)}")
    if device == "cuda":
        return [(PROVIDERS["cuda"], {**CUDA_OPTIONS, "device_id": str(device_id)}), PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


def open_session(model: str | bytes, device: str, options=None, strict: bool = True, what: str = "the graph",
                 device_id: int = 0):
    """An InferenceSession of `model` (a path or serialized bytes) on `device` (GPU `device_id`
    on cuda), its providers checked as the module docstring says. Returns (session, the device
    it really runs on)."""
    ort = import_onnxruntime()
    session = ort.InferenceSession(model, options, providers=session_providers(device, device_id))
    return session, check_providers(session, device, strict, what)


def run_bound(session, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Run `session` reading `inputs` and writing `outputs` in place (name -> contiguous torch
    tensor, CPU or CUDA): torch's current stream is synchronised first, because ONNX Runtime's
    CUDA streams do not wait for it (it could read an input torch has not written yet)."""
    import torch

    numpy_dtypes = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64"}
    _synchronize_torch([*inputs.values(), *outputs.values()])
    binding = session.io_binding()
    for bind, tensors in ((binding.bind_input, inputs), (binding.bind_output, outputs)):
        for name, tensor in tensors.items():
            bind(name, tensor.device.type, tensor.device.index or 0, numpy_dtypes[tensor.dtype],
                 tuple(tensor.shape), tensor.data_ptr())
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()


def _synchronize_torch(tensors: list) -> None:
    """Wait for torch's current stream on every CUDA device among `tensors`."""
    import torch

    for device in {t.device for t in tensors if t.device.type == "cuda"}:
        torch.cuda.current_stream(device).synchronize()


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
