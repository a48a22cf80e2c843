"""OpenVINO backend (CPU): the engine dir's fp32 ONNX graphs compiled in f32 or bf16 (bf16 only
where the CPU computes it), or the NNCF int8 IR that `export --int8 --calibration` writes.

Hints as the ONNX Runtime backend's: one stream using every core (PERFORMANCE_HINT=LATENCY; a
request at a time per engine), threads as given (0: OpenVINO's default, one per core), and the
inference precision set explicitly: OpenVINO's own default is bf16 on a bf16 CPU, which a user
asking for f32 must not get silently. Every engine passes its parity gate at load: the probe batch
through each compiled shape (STATIC_BATCHES and the dynamic batch) vs the fp32 PyTorch model from
the engine's checkpoint/, with the precision's bounds (export.parity), refused with its numbers when
it fails; int8 on the export's held-out calibration images instead, with the export's int8_static
bounds.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError
from splip_engine.optional import import_openvino
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.cpu_features import CpuFeatures, read_cpu_features

logger = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16", "int8")
STATIC_BATCHES = (1,)
"""Batch sizes also compiled with a static input shape (any other size runs on the dynamic-batch
model): with the shape known ahead OpenVINO's CPU plugin picks its blocking once. Measured on the
ViT-B/32 sketch tower in bf16, static vs dynamic p50: batch 1 19.6 vs 21.8 ms, 16 119.5 vs 127.6
ms, 32 244 vs 269 ms; but each shape is a compiled model of its own, weights included (ViT-B/32
bf16 engine RSS after load: 4.0 GiB dynamic only, 5.0 GiB with static 1, 6.2 GiB with static 1
and 32). So only the serving latency case, a single query, gets one (benchmarks/RESULTS.md, issue 19)."""
F32_BOUNDS = {"max_abs_diff": 1e-3, "min_cosine": 0.9999}
"""OpenVINO f32 vs PyTorch: same math, other kernels and fusions (its GELU / LayerNorm / MHA
kernels reorder float32 sums); measured 1e-5..2e-4 max |diff| on tiny and ViT-B/32."""


def openvino_graphs(manifest: dict[str, Any]) -> dict[str, str]:
    """modality -> the NNCF int8 IR (.xml) the manifest lists for it ({} when none)."""
    return {entry["modality"]: name for name, entry in manifest.get("files", {}).items()
            if entry.get("format") == "openvino-ir" and name.endswith(".xml")}


def default_precision(manifest: dict[str, Any], features: CpuFeatures) -> str:
    """int8 for an engine dir with an int8 IR, else bf16 where the CPU has it, else f32."""
    if openvino_graphs(manifest):
        return "int8"
    return "bf16" if features.bf16 else "f32"


def _infer(request, pixels: np.ndarray) -> np.ndarray:
    request.infer({0: pixels}, share_inputs=True)
    return np.array(request.get_output_tensor(0).data, dtype=np.float32)


class OpenVinoEncoder(Encoder):
    """OpenVINO on CPU in `precision` (see the module docstring); `parity` holds the load gate's
    report per modality."""

    backend = "openvino"

    def __init__(self, engine_dir: Path, manifest: dict[str, Any], precision: str = "auto", batch_size: int = 32,
                 threads: int = 0, features: CpuFeatures | None = None):
        super().__init__(manifest, batch_size=batch_size)
        ov = import_openvino()
        features = features or read_cpu_features()
        precision = default_precision(manifest, features) if precision == "auto" else precision
        if precision not in PRECISIONS:
            raise SpLIPError(f"openvino precision={precision!r}: choose one of {PRECISIONS} or 'auto'")
        if precision == "bf16" and not features.bf16:
            raise SpLIPError(f"openvino precision='bf16' needs a CPU with AVX512_BF16 or AMX-BF16; this one "
                             f"({features.key}) has neither: use precision='f32'")
        self.precision = precision
        graphs = self._graph_files(engine_dir, manifest, precision)
        hint = "bf16" if features.bf16 else "f32"  # int8 IR: what is not quantized runs in this
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint if precision == "int8" else precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.requests = {modality: self._compile(core, path, config) for modality, path in graphs.items()}
        self.parity: dict[str, dict] = {}
        self._gate(engine_dir)

    def _compile(self, core, path: Path, config: dict[str, Any]) -> dict[int | None, Any]:
        """Infer requests of `path`: None -> the dynamic-batch model, rows -> a static (rows, 3, S, S)
        model for each of STATIC_BATCHES."""
        try:
            model = core.read_model(str(path))
            requests = {None: core.compile_model(model, "CPU", config).create_infer_request()}
            for rows in STATIC_BATCHES:
                static = model.clone()
                static.reshape([rows, 3, self.image_size, self.image_size])
                requests[rows] = core.compile_model(static, "CPU", config).create_infer_request()
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SpLIPError(f"cannot load {path} with OpenVINO ({reason}): the file is missing, damaged or not "
                             "an engine graph; re-export the engine") from e
        return requests

    @staticmethod
    def _graph_files(engine_dir: Path, manifest: dict[str, Any], precision: str) -> dict[str, Path]:
        """modality -> the file OpenVINO compiles: the int8 IR, or the fp32 ONNX graph."""
        if precision == "int8":
            irs = openvino_graphs(manifest)
            if set(irs) != set(MODALITIES):
                raise SpLIPError(f"{engine_dir} has no OpenVINO int8 graphs: export it with "
                                 "`splip-engine export --int8 --calibration DIR` for openvino int8")
            return {m: engine_dir / irs[m] for m in MODALITIES}
        if manifest.get("precision") != "fp32":
            raise SpLIPError(f"{engine_dir} is a {manifest.get('precision')} engine; OpenVINO {precision} compiles the "
                             "fp32 ONNX graphs of a plain `splip-engine export`")
        return {m: engine_dir / f"{m}.onnx" for m in MODALITIES}

    def _gate(self, engine_dir: Path) -> None:
        """The probe batch through each tower vs fp32 PyTorch (the engine's checkpoint/)."""
        from splip_engine.checkpoint import load_checkpoint
        from splip_engine.export import parity

        if not (engine_dir / "checkpoint").is_dir():
            raise SpLIPError(f"{engine_dir} has no checkpoint/ for the OpenVINO parity gate; re-export the engine")
        model = load_checkpoint(engine_dir / "checkpoint").eval()
        bounds = F32_BOUNDS if self.precision == "f32" else parity.resolve_thresholds(
            "int8_static" if self.precision == "int8" else "bf16")
        shapes = {"dynamic batch" if rows is None else f"static batch {rows}": self._shape_embedder(rows)
                  for rows in self.requests[MODALITIES[0]]}
        self.parity = parity.gate_engine(shapes, model, self.image_size, bounds,
                                         f"OpenVINO {self.precision} engine of {engine_dir}",
                                         "use another precision or backend", self._gate_images(engine_dir))
        logger.info("openvino %s engine: parity %s", self.precision, self.parity)

    def _gate_images(self, engine_dir: Path) -> dict[str, np.ndarray] | None:
        """int8: the export's held-out calibration images (calibrated ranges clip the synthetic probe,
        so only in-distribution images can hold int8 to its export bounds); else the probe (None)."""
        from splip_engine.export.calibration import HELD_OUT_FILE, read_held_out

        if self.precision != "int8":
            return None
        if HELD_OUT_FILE not in self.manifest.get("files", {}):
            raise SpLIPError(f"{engine_dir} has OpenVINO int8 graphs but no {HELD_OUT_FILE} for their load gate; "
                             "re-export it with `splip-engine export --int8 --calibration DIR`")
        return read_held_out(engine_dir / HELD_OUT_FILE)

    def _shape_embedder(self, rows: int | None) -> Callable[[np.ndarray, str], np.ndarray]:
        """embed_pixels through one compiled shape only (zero rows pad the last chunk): the gate checks each."""
        def embed(pixels: np.ndarray, modality: str) -> np.ndarray:
            step, out = rows or len(pixels), []
            for start in range(0, len(pixels), step):
                chunk = pixels[start:start + step]
                padding = np.zeros((step - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                out.append(_infer(self.requests[modality][rows], np.concatenate([chunk, padding]))[:len(chunk)])
            return np.concatenate(out)

        return embed

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        requests = self.requests[modality]
        return _infer(requests.get(len(pixels), requests[None]), pixels)

    def close(self) -> None:
        self.requests.clear()
