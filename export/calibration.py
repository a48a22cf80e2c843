"""Static int8 calibrated on the user's images (`export --int8 --calibration PATH`).

Each tower is calibrated on its own modality (sketches for the sketch engine, photos for the
photo engine), read from any input `embed` reads (folder, .txt list, parquet, tar shards,
QuickDraw ndjson); bad items are skipped and listed. A seeded split keeps `HELD_OUT` images out
of calibration: the gate compares each quantized engine with fp32 PyTorch on them. Two engines
per tower: ONNX Runtime static QDQ (int8 weights per channel, uint8 activations with MinMax
ranges) and, where NNCF and OpenVINO are installed, an OpenVINO IR quantized by NNCF.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError
from splip_engine.optional import import_nncf, import_onnxruntime, import_openvino

DEFAULT_COUNT = 128
"""Calibration images per tower (NNCF's own default is 300; 128 measured as good on ViT-B/32)."""
HELD_OUT = 32
"""Images per tower kept out of calibration for the gate (8 queries x 24 gallery for top-10)."""
INT8_OP_TYPES = ["MatMul", "Gemm"]
HELD_OUT_FILE = "calibration_held_out.npz"
"""The held-out images in the engine dir (float16 pixels per tower): the int8 engines' load gate."""


@dataclass
class CalibrationSet:
    """modality -> calibration pixels (n, 3, S, S) and held-out pixels (HELD_OUT, 3, S, S), float32;
    `skipped`: modality -> [(id, reason)] of inputs that could not be read."""

    pixels: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray]
    sources: dict[str, str]
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def describe(self) -> dict:
        """What the manifest records about the calibration."""
        return {m: {"source": self.sources[m], "images": len(self.pixels[m]), "held_out": len(self.held_out[m]),
                    "skipped": len(self.skipped.get(m, []))} for m in MODALITIES}


def calibration_sources(path: str | Path | dict[str, str]) -> dict[str, str]:
    """modality -> input: a dict as given, or a dir holding sketch/ and photo/ (each any input `embed` reads)."""
    if isinstance(path, dict):
        missing = [m for m in MODALITIES if not path.get(m)]
        if missing:
            raise SpLIPError(f"calibration needs images for both towers; missing: {', '.join(missing)}")
        return {m: str(path[m]) for m in MODALITIES}
    root = Path(path)
    found = {m: root / m for m in MODALITIES}
    missing = [m for m, p in found.items() if not p.exists()]
    if missing:
        raise SpLIPError(f"--calibration {root}: expected {' and '.join(str(root / m) for m in missing)} (sketches "
                         "calibrate the sketch engine, photos the photo engine); or pass --calibration-sketch PATH "
                         "and --calibration-photo PATH")
    return {m: str(p) for m, p in found.items()}


def read_calibration(sources: dict[str, str], spec, count: int = DEFAULT_COUNT, held_out: int = HELD_OUT,
                     seed: int = 0) -> CalibrationSet:
    """Up to `count` + `held_out` images per modality from `sources`, preprocessed as the engine
    will see them (`spec`: a PreprocessSpec), split by a seeded permutation."""
    from splip_engine.data.transforms import preprocess_batch
    from splip_engine.runtime.inputs import RecordError, list_records

    if count < 1:
        raise SpLIPError(f"calibration count={count}: must be >= 1")
    pixels, kept, skipped = {}, {}, {}
    for modality in MODALITIES:
        records, bad = [], []
        for record in list_records(sources[modality]):
            if isinstance(record, RecordError):
                bad.append((record.id, record.reason))
                continue
            records.append(record)
            if len(records) == count + held_out:
                break
        images, errors = preprocess_batch([r.source for r in records], modality, spec)
        bad += [(records[i].id, message) for i, message in errors]
        skipped[modality] = bad
        if len(images) < held_out + 1:
            raise SpLIPError(f"calibration input {sources[modality]} has {len(images)} readable {modality} images "
                             f"({len(bad)} skipped); at least {held_out + 1} are needed ({held_out} are held out "
                             "for the gate)")
        order = np.random.default_rng(seed).permutation(len(images))
        kept[modality] = images[order[:held_out]]
        pixels[modality] = images[order[held_out:]]
    return CalibrationSet(pixels, kept, dict(sources), skipped)


def write_held_out(path: Path, held_out: dict[str, np.ndarray]) -> None:
    """Write the held-out pixels (modality -> (n, 3, S, S)) as HELD_OUT_FILE, atomically."""
    from splip_engine.io_utils import write_with_atomic

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy appends no .npz to the temporary name
            np.savez_compressed(f, **{m: pixels.astype(np.float16) for m, pixels in held_out.items()})

    write_with_atomic(path, write)


def read_held_out(path: Path) -> dict[str, np.ndarray]:
    """modality -> held-out pixels (n, 3, S, S) float32 from a HELD_OUT_FILE (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {m: stored[m].astype(np.float32) for m in MODALITIES}
    except (OSError, ValueError, KeyError) as e:
        raise SpLIPError(f"cannot read the held-out calibration images {path} ({e}); re-export the engine") from e


class _Reader:
    """ONNX Runtime's CalibrationDataReader over (n, 3, S, S) pixels, 8 images per batch."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch: int = 8):
        self.batches = iter([{input_name: pixels[i:i + batch]} for i in range(0, len(pixels), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize_onnx_static(graph, pixels: np.ndarray):
    """ONNX Runtime static QDQ int8 copy of the fp32 onnx.ModelProto `graph`, calibrated on `pixels`."""
    import_onnxruntime()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="splip-int8-static-") as tmp:
        source, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(graph, str(source))
        quantize_static(str(source), str(out), _Reader(graph.graph.input[0].name, pixels),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=INT8_OP_TYPES, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(str(out))


def quantize_openvino(graph, pixels: np.ndarray):
    """NNCF post-training int8 of the fp32 onnx.ModelProto `graph` as an openvino.Model, calibrated
    on `pixels`: NNCF's transformer scheme (what it keeps in float), symmetric activations (the
    PERFORMANCE preset: the CPU's int8 kernels take no zero points) and no SmoothQuant. Measured on
    the ViT-B/32 sketch tower vs NNCF's defaults (the docs' flow), batch 16, held-out min cosine /
    top-10 vs torch fp32: 1.01x the speed, 0.99976 / 1.0 vs 0.99881 / 0.86 (defaults fail the int8
    gate); with SmoothQuant on, 0.99960 on held-out images but 0.886 on the synthetic probe; the
    transformer scheme's own MIXED preset is 0.91x (benchmarks/bench_nncf_settings.py)."""
    ov = import_openvino()
    nncf = import_nncf()
    model = ov.Core().read_model(graph.SerializeToString())
    dataset = nncf.Dataset([pixels[i:i + 1] for i in range(len(pixels))])
    no_smooth_quant = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1))
    return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                         preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(pixels),
                         advanced_parameters=no_smooth_quant)


def openvino_ir(model) -> tuple[bytes, bytes]:
    """(xml, bin) bytes of an openvino.Model (the IR export writes as <tower>.openvino.xml/.bin)."""
    ov = import_openvino()
    with tempfile.TemporaryDirectory(prefix="splip-ov-ir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def openvino_embedder(model, precision_hint: str | None = "f32"):
    """pixels (n, 3, S, S) -> (n, D) through an openvino.Model (or a model file) compiled on CPU (the
    export gate); precision_hint None compiles with OpenVINO's defaults, as a user would."""
    ov = import_openvino()
    config = {} if precision_hint is None else {"INFERENCE_PRECISION_HINT": precision_hint}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()

    def embed(pixels: np.ndarray) -> np.ndarray:
        request.infer({0: pixels})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    return embed
