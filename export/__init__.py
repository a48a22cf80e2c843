"""SpLIP export: torch -> ONNX (fused attention, fp16 / int8) and TensorRT, gated on parity.

- graph: trace one tower to ONNX (V_tg baked, attention fused into one node per layer)
- precision: fp16 / int8 lowering of an fp32 graph
- calibration: static int8 calibrated on the user's images (ONNX Runtime QDQ, NNCF OpenVINO IR)
- parity: probe batch, the PyTorch reference and the parity gate with its thresholds
- tensorrt: ONNX -> TensorRT plans, timing cache, MHA inspection, plan runner
- triton: the engines as a Triton Inference Server model repository
- manifest: manifest.json writing, reading and file verification
- latest: runs/latest, where train records its last checkpoint
- exporter: export_engines, the library function behind `splip-engine export`
"""
from .exporter import ExportReport, export_engines
from .latest import find_latest_checkpoint, record_latest_checkpoint
from .manifest import MANIFEST_FORMAT_VERSION, read_manifest, verify_files

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "ExportReport",
    "export_engines",
    "find_latest_checkpoint",
    "read_manifest",
    "record_latest_checkpoint",
    "verify_files",
]
