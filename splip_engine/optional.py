"""Optional heavy dependencies, imported where they are used: a missing one is a SpLIPError that
names the pip extra installing it (STYLE 9), so `import splip_engine` and `--help` work without them."""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from splip_engine.errors import SpLIPError


OFFLINE_ENV = {"ORT_DISABLE_TELEMETRY": "1", "RAY_USAGE_STATS_ENABLED": "0"}
"""Environment that keeps ONNX Runtime's native telemetry (a DNS lookup of a Microsoft host every
10-20 s) and Ray's usage stats from reaching out: the engine connects nowhere the user did not ask."""
OPENVINO_TELEMETRY = "openvino_telemetry"
"""The module through which OpenVINO (on import) and NNCF (on quantize) send Google Analytics events."""


def keep_offline() -> dict[str, str]:
    """Set OFFLINE_ENV in this process's environment (a value the user set wins) before ONNX Runtime
    or Ray loads, so child processes inherit it; returns the values in force (for Ray's runtime_env)."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    # OpenVINO sends an analytics event when it is imported and NNCF when it quantizes, both through
    # openvino_telemetry and both with a no-op fallback without it: hide that module (unless loaded)
    sys.modules.setdefault(OPENVINO_TELEMETRY, None)
    return {name: os.environ[name] for name in OFFLINE_ENV}


def import_optional(module: str, install: str) -> ModuleType:
    """`module` imported, or a SpLIPError saying `install` (the pip command that provides it)."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as e:  # OSError: a shared library it binds (e.g. libcairo) is missing
        raise SpLIPError(f"{module} is not installed: {install}") from e


def import_onnxruntime() -> ModuleType:
    """onnxruntime (export checks every engine with it; the runtime's CPU / CUDA backend), with its
    telemetry off (`keep_offline`; it reads the setting when it loads)."""
    keep_offline()
    return import_optional("onnxruntime", "pip install 'splip-engine[cpu]' (or [gpu])")


def import_faiss() -> ModuleType:
    """faiss (the gallery index)."""
    return import_optional("faiss", "pip install faiss-cpu (or faiss-gpu)")


def import_openvino() -> ModuleType:
    """openvino (the OpenVINO CPU backend and the NNCF int8 export), with its telemetry hidden (`keep_offline`)."""
    keep_offline()
    return import_optional("openvino", "pip install 'splip-engine[cpu]'")


def import_nncf() -> ModuleType:
    """nncf (static int8 quantization for OpenVINO, `export --int8 --calibration`), telemetry hidden."""
    keep_offline()
    return import_optional("nncf", "pip install 'splip-engine[cpu]'")


def is_installed(module: str) -> bool:
    """Whether `module` can be imported here (without importing it); False when blocked in sys.modules."""
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
