"""The CPU a CPU engine runs on: its model name and the ISA features that decide the engine
(bf16 needs AVX512_BF16 or AMX-BF16; fast int8 needs VNNI or AMX-INT8), read from /proc/cpuinfo
and, where OpenVINO is installed, its CPU plugin's capabilities. The pair is the key `auto`
caches its choice under: another CPU (or a faked one in tests) decides again."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512_BF16",
    "avx512_fp16": "AVX512_FP16",
    "avx512_vnni": "AVX512_VNNI",
    "avx_vnni": "AVX_VNNI",
    "amx_bf16": "AMX_BF16",
    "amx_int8": "AMX_INT8",
}
"""/proc/cpuinfo flag -> the name `info` prints, for the flags that change which engine is fastest."""
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """`model`: the CPU's model name; `flags`: the FEATURES flags it has (cpuinfo spelling);
    `openvino`: OpenVINO's CPU OPTIMIZATION_CAPABILITIES, () when OpenVINO is not installed."""

    model: str
    flags: tuple[str, ...]
    openvino: tuple[str, ...] = ()

    @property
    def bf16(self) -> bool:
        """bf16 compute in hardware: a bf16 flag in cpuinfo, and OpenVINO (when installed) agrees."""
        return any(f in self.flags for f in BF16_FLAGS) and (not self.openvino or "BF16" in self.openvino)

    @property
    def int8(self) -> bool:
        """int8 dot-product instructions (VNNI / AMX-INT8)."""
        return any(f in self.flags for f in INT8_FLAGS)

    @property
    def key(self) -> str:
        """What `auto` caches its choice under: the model and the deciding flags."""
        return f"{self.model} [{' '.join(self.flags) or 'no AVX2'}]{' bf16' if self.bf16 else ''}"

    def names(self) -> list[str]:
        """The features as `info` prints them (AVX2, AVX-512, AVX512_BF16, ...)."""
        return [FEATURES[f] for f in self.flags]


def openvino_capabilities() -> tuple[str, ...]:
    """OpenVINO's CPU plugin OPTIMIZATION_CAPABILITIES (e.g. FP32, BF16, INT8), () without OpenVINO."""
    from splip_engine.optional import import_openvino, is_installed

    if not is_installed("openvino"):
        return ()
    ov = import_openvino()

    return tuple(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def read_cpu_features(cpuinfo: Path | None = None) -> CpuFeatures:
    """The CpuFeatures of this machine (`cpuinfo`: the file to read, default /proc/cpuinfo;
    without one, the model is platform.processor() and no flags are known)."""
    path = cpuinfo or CPUINFO
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name" and value.strip():
            model = value.strip()
        elif name.strip() == "flags":
            flags = set(value.split())
            break
    return CpuFeatures(model, tuple(f for f in FEATURES if f in flags), openvino_capabilities())
