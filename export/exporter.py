"""export_engines: SpLIP model or checkpoint -> engine dir, gated on fused attention and parity.

Order: trace both towers (fp32, fused attention) -> count fused attention -> lower precision ->
parity vs fp32 PyTorch on the probe batch (ONNX Runtime; TensorRT plans too when built) ->
only if every check passed: write the graphs, plans and the checkpoint, then the manifest last.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splip_engine._version import __version__
from splip_engine.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError
from splip_engine.io_utils import write_bytes_atomic, write_with_atomic
from splip_engine.model import SpLIP
from splip_engine.optional import import_onnxruntime, is_installed

from . import parity
from .graph import (
    BATCH_AXIS,
    INPUT_NAME,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAME,
    count_fused_attention,
    expected_attention_count,
    export_tower,
)
from .manifest import MANIFEST_FILE, MANIFEST_FORMAT_VERSION, describe_file, write_manifest
from .calibration import (
    HELD_OUT_FILE,
    CalibrationSet,
    calibration_sources,
    openvino_embedder,
    openvino_ir,
    quantize_onnx_static,
    quantize_openvino,
    read_calibration,
    write_held_out,
)
from .precision import convert_precision
from .validate import onnx_problem

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "tensorrt", "all")
DEFAULT_MAX_BATCH = 64
PREPROCESS = {"sketch": "pad_square_white", "photo": "resize_center_crop"}
CHECKPOINT_DIR = "checkpoint"


@dataclass
class ExportReport:
    """What export checked and wrote; true when every check passed (and the engines were written)."""

    out_dir: Path
    precision: str
    parity: dict[str, dict] = field(default_factory=dict)
    fused_attention: dict[str, dict] = field(default_factory=dict)
    onnx_check: dict[str, str] = field(default_factory=dict)
    tensorrt: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    openvino: dict[str, dict] = field(default_factory=dict)
    openvino_ir: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    held_out: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors

    @property
    def written(self) -> bool:
        return bool(self.files)

    def __bool__(self) -> bool:
        return self.passed

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line (the CLI prints these)."""
        out = []
        for tower, fused in self.fused_attention.items():
            out.append(f"{tower}: {fused['count']}/{fused['expected']} attention layers fused ({fused['op_type']})")
        for tower, verdict in self.onnx_check.items():
            out.append(f"{tower}: {'valid ONNX' if verdict == 'valid' else 'INVALID ONNX: ' + verdict} "
                       "(onnx.checker full_check, strict shape inference)")
        for name, report in self.parity.items():
            where = f" (onnxruntime on {report['device']})" if "device" in report else ""
            out.append(f"{name} {self.precision} parity vs PyTorch fp32{where}: {_metrics_line(report)}")
        for name, report in self.openvino.items():
            out.append(f"{name} OpenVINO int8 (NNCF) parity vs PyTorch fp32: {_metrics_line(report)}")
        if self.calibration:
            out += [f"{m} calibration: {c['images']} images from {c['source']}, {c['held_out']} held out for the "
                    f"gate, {c['skipped']} skipped" for m, c in self.calibration.items()]
        if self.tensorrt:
            for plan, report in self.tensorrt.get("parity", {}).items():
                out.append(f"{plan} TensorRT {self.precision} parity vs PyTorch fp32: {_metrics_line(report)}")
            for tower, info in self.tensorrt.get("inspection", {}).items():
                out.append(f"{tower} TensorRT {self.tensorrt['version']} ({self.tensorrt['typing']} typing): "
                           f"attention fused: {info['mha_fused']} ({info['mha_layers']} attention kernels, "
                           f"{info['softmax_layers']} separate softmax, {info['layers']} layers)")
            cache = self.tensorrt["timing_cache"]
            out.append(f"TensorRT timing cache {cache['file']}: "
                       + (f"reused ({cache['bytes_in']} bytes)" if cache["reused"] else "new"))
        out += [f"note: {n}" for n in self.notes]
        if self.files:
            out.append(f"wrote {self.out_dir}: {', '.join(self.files)}")
        elif self.errors:
            out.append(f"nothing written to {self.out_dir}")
        return out


def _metrics_line(report: dict) -> str:
    verdict = "ok" if report["passed"] else "FAILED: " + ", ".join(report["failed"])
    return (f"max |diff| {report['max_abs_diff']:.2e}, min cosine {report['min_cosine']:.6f}, "
            f"top-10 agreement {report['top10_agreement']:.3f} [{verdict}]")


def _formats(formats: str | Sequence[str]) -> set[str]:
    requested = {formats} if isinstance(formats, str) else set(formats)
    unknown = requested - set(FORMATS)
    if unknown:
        raise SpLIPError(f"format {sorted(unknown)}: choose from {FORMATS}")
    return {"onnx", "tensorrt"} if "all" in requested else requested


def _precision(fp16: bool, int8: bool) -> str:
    if fp16 and int8:
        raise SpLIPError("--fp16 and --int8 exclude each other: fp16 is for GPU engines, int8 for CPU engines")
    return "fp16" if fp16 else "int8" if int8 else "fp32"


def _resolve_model(model_or_checkpoint: SpLIP | str | Path) -> SpLIP:
    """The model to export, on CPU in eval mode (a passed-in model is moved there)."""
    if isinstance(model_or_checkpoint, SpLIP):
        return model_or_checkpoint.cpu().eval()
    return load_checkpoint(model_or_checkpoint).eval()


def export_engines(model_or_checkpoint: SpLIP | str | Path, out_dir: str | Path = "engines", fp16: bool = False,
                   int8: bool = False, formats: str | Sequence[str] = ("onnx",), opset: int = 23,
                   max_batch: int = DEFAULT_MAX_BATCH, allow_unfused: bool = False,
                   thresholds: dict[str, float] | None = None, triton_repo: str | Path | None = None,
                   tensorrt_typing: str = "auto", calibration: str | Path | dict[str, str] | None = None,
                   calibration_count: int = 128) -> ExportReport:
    """Export the sketch and photo encoders of a SpLIP model (or checkpoint dir) to `out_dir`.

    `tensorrt_typing`: "auto" (strong on TensorRT 11 and >= 10.12, weak before), "strong" or
    "weak" (10.x only); see export/tensorrt.py.
    `thresholds` overrides parity bounds of the exported precision (metric -> bound, see
    parity.DEFAULT_THRESHOLDS). `calibration` (with int8): static int8 calibrated on the user's
    images (export/calibration.py), gated on held-out ones. Nothing is written unless every check passes; the returned
    report says what was checked and written. Formats with TensorRT need TensorRT and a GPU:
    without them `all` writes the ONNX engines and notes it, `tensorrt` writes them and fails.
    """
    from .tensorrt import TYPINGS, tensorrt_unavailable

    out_dir = Path(out_dir)
    precision = _precision(fp16, int8)
    wanted = _formats(formats)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise SpLIPError(f"opset={opset}: supported opsets are {MIN_OPSET}..{MAX_OPSET}")
    if max_batch < 1:
        raise SpLIPError(f"max_batch={max_batch}: must be >= 1")
    if "tensorrt" in wanted and precision == "int8":
        raise SpLIPError("--int8 engines are for ONNX Runtime on CPU; TensorRT plans are fp32/fp16: use --format onnx")
    if tensorrt_typing not in TYPINGS:
        raise SpLIPError(f"tensorrt_typing={tensorrt_typing!r}: choose one of {TYPINGS}")
    if calibration is not None and precision != "int8":
        raise SpLIPError("--calibration calibrates int8 engines: pass it with --int8")
    bounds = parity.resolve_thresholds("int8_static" if calibration is not None else precision, thresholds)
    import_onnxruntime()
    model = _resolve_model(model_or_checkpoint)
    report = ExportReport(out_dir=out_dir, precision=precision)
    calibrated = _read_calibration(model, calibration, calibration_count, report)

    trt_reason = tensorrt_unavailable() if "tensorrt" in wanted else None
    probe = parity.probe_images(model.image_size)
    references = {m: parity.embed_batched(parity.torch_embedder(model, m), probe) for m in MODALITIES}
    device = parity.serving_device()
    if calibrated:  # the gate runs on held-out calibration images instead of the synthetic probe
        references = {m: parity.embed_batched(parity.torch_embedder(model, m), calibrated.held_out[m])
                      for m in MODALITIES}
    graphs = {m: export_checked_tower(model, m, opset, precision, bounds,
                                      calibrated.held_out[m] if calibrated else probe, references[m], allow_unfused,
                                      report, device, calibrated.pixels[m] if calibrated else None)
              for m in MODALITIES}
    plans, timing_cache = {}, b""
    if "tensorrt" in wanted and not trt_reason:
        plans, timing_cache = _build_checked_plans(model, opset, precision, bounds, probe, references, max_batch,
                                                   out_dir, report, tensorrt_typing)
    if report.errors:  # a gate failed: nothing is written
        return report
    _write_engine_dir(model, out_dir, graphs, plans, timing_cache, precision, opset, thresholds or {}, report)
    if trt_reason:
        message = f"{trt_reason}: no TensorRT plans built; wrote the ONNX engines only"
        (report.errors if wanted == {"tensorrt"} else report.notes).append(message)
    if triton_repo is not None:
        from .manifest import read_manifest
        from .triton import write_triton_repo

        models = write_triton_repo(triton_repo, out_dir, read_manifest(out_dir), max_batch)
        report.notes.append(f"Triton model repository {triton_repo}: {', '.join(m.name for m in models)}")
    return report


def export_checked_tower(model: SpLIP, modality: str, opset: int, precision: str, bounds: dict[str, float],
                         probe: np.ndarray, reference: np.ndarray, allow_unfused: bool, report: ExportReport,
                         device: str = "cpu", calibration: np.ndarray | None = None):
    """Trace one tower, count its fused attention, lower its precision, check it is valid ONNX
    and gate it against the PyTorch `reference` embeddings (n, D) of `probe`: the fp32 graph on
    CPU first, then the engine on ONNX Runtime on `device` (where it will be served; int8
    engines always on CPU); results go into `report`. With `calibration` pixels the int8 engine is
    static (ONNX Runtime QDQ), and an NNCF OpenVINO int8 IR is built and gated beside it.
    Returns the engine's onnx.ModelProto."""
    graph = export_tower(model, modality, opset=opset, attention="contrib")
    count, op_type = count_fused_attention(graph)
    expected = expected_attention_count(model)
    fused_ok = count == expected or allow_unfused
    report.fused_attention[modality] = {"count": count, "expected": expected, "op_type": op_type,
                                        "passed": fused_ok, "allowed_unfused": allow_unfused and count != expected}
    if not fused_ok:
        report.errors.append(f"{modality} tower: {count} fused attention nodes, expected {expected} (one per "
                             "transformer layer); pass --allow-unfused to export it anyway")
    fp32_check = _gate(graph, "cpu", probe, reference, parity.resolve_thresholds("fp32"))
    engine = convert_precision(graph, precision) if calibration is None else quantize_onnx_static(graph, calibration)
    if calibration is not None and _has_openvino():
        _openvino_int8(graph, modality, calibration, probe, reference, bounds, report)
    problem = onnx_problem(engine)
    report.onnx_check[modality] = problem or "valid"
    if problem:
        report.errors.append(f"{modality} tower: the {precision} graph is not valid ONNX ({problem})")
    served_on = "cpu" if precision == "int8" else device
    result = fp32_check
    if precision != "fp32" or served_on != "cpu":
        result = {**_gate(engine, served_on, probe, reference, bounds), "fp32_graph": fp32_check}
        if not fp32_check["passed"]:
            result["passed"] = False
            result["failed"] = [f"fp32 graph: {f}" for f in fp32_check["failed"]] + result["failed"]
    report.parity[modality] = result
    if not result["passed"]:
        report.errors.append(f"{modality} tower failed the {precision} parity gate: {', '.join(result['failed'])}")
    logger.info("%s tower: %d/%d fused, parity %s", modality, count, expected, result)
    return engine


def _has_openvino() -> bool:
    return is_installed("openvino") and is_installed("nncf")


def _read_calibration(model: SpLIP, calibration, count: int, report: ExportReport) -> CalibrationSet | None:
    """The calibration images (None without `calibration`), recorded in `report`."""
    if calibration is None:
        return None
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from splip_engine.data.transforms import PreprocessSpec

    spec = PreprocessSpec(image_size=model.image_size, mean=tuple(OPENAI_DATASET_MEAN), std=tuple(OPENAI_DATASET_STD))
    calibrated = read_calibration(calibration_sources(calibration), spec, count)
    report.calibration = calibrated.describe()
    report.held_out = calibrated.held_out
    if not _has_openvino():
        report.notes.append("openvino / nncf not installed: no OpenVINO int8 graphs (pip install 'splip-engine[cpu]')")
    return calibrated


def _openvino_int8(graph, modality: str, calibration: np.ndarray, held_out: np.ndarray, reference: np.ndarray,
                   bounds: dict[str, float], report: ExportReport) -> None:
    """NNCF int8 of the fp32 `graph`, gated on the held-out images as OpenVINO will run it here
    (what is not quantized in bf16 where the CPU has it); its IR bytes go into `report`."""
    from splip_engine.runtime.cpu_features import read_cpu_features

    quantized = quantize_openvino(graph, calibration)
    embed = openvino_embedder(quantized, "bf16" if read_cpu_features().bf16 else "f32")
    result = parity.compare(reference, parity.embed_batched(embed, held_out), bounds)
    report.openvino[f"{modality}.openvino.xml"] = result
    report.openvino_ir[modality] = openvino_ir(quantized)
    if not result["passed"]:
        report.errors.append(f"{modality} tower: the OpenVINO int8 (NNCF) engine failed the int8 calibration gate: "
                             f"{', '.join(result['failed'])}")


def _gate(graph, device: str, probe: np.ndarray, reference: np.ndarray, bounds: dict[str, float]) -> dict:
    """Parity report of `graph` on ONNX Runtime on `device` vs `reference`, with the provider it ran on."""
    embed = parity.onnxruntime_embedder(graph, device=device)
    return {**parity.compare(reference, parity.embed_batched(embed, probe), bounds), "device": embed.device}


def _build_checked_plans(model: SpLIP, opset: int, precision: str, bounds: dict[str, float], probe: np.ndarray,
                         references: dict[str, np.ndarray], max_batch: int, out_dir: Path, report: ExportReport,
                         typing: str) -> tuple[dict[str, bytes], bytes]:
    """Build the throughput and latency plans of both towers and gate each through TensorRT.
    The timing cache of this GPU + TensorRT version is read from `out_dir` and handed to every build."""
    from . import tensorrt as trt_export

    version = trt_export.tensorrt_version()
    typing = trt_export.plan_typing(version, typing)
    key = trt_export.current_timing_cache_key()
    timing_cache = trt_export.load_timing_cache(out_dir, key)
    plans: dict[str, bytes] = {}
    profiles = trt_export.plan_profiles(max_batch)
    info: dict[str, Any] = {
        "version": version, "typing": typing, "opset": trt_export.TENSORRT_OPSET, "max_batch": max_batch,
        "plans": {}, "latency_plans": {}, "inspection": {}, "parity": {},
        "profiles": {p.name: {"min_batch": p.min_batch, "opt_batch": p.opt_batch, "max_batch": p.max_batch}
                     for p in profiles},
        "timing_cache": {**key, "reused": bool(timing_cache), "bytes_in": len(timing_cache)},
    }
    fp16 = precision == "fp16"
    for modality in MODALITIES:
        graph = export_tower(model, modality, opset=min(opset, trt_export.TENSORRT_OPSET), attention="math")
        onnx_bytes = trt_export.plan_onnx(graph, fp16, typing).SerializeToString()
        for profile in profiles:
            plan, timing_cache = trt_export.build_plan(onnx_bytes, model.image_size, profile, fp16=fp16,
                                                       typing=typing, timing_cache=timing_cache)
            throughput = profile.name == "throughput"
            name = f"{modality}.plan" if throughput else f"{modality}.b1.plan"
            plans[name] = plan
            info["plans" if throughput else "latency_plans"][modality] = name
            batch = min(parity.PROBE_BATCH, profile.max_batch)
            embeddings = parity.embed_batched(trt_export.PlanRunner(plan), probe, batch)
            result = parity.compare(references[modality], embeddings, bounds)
            info["parity"][name] = result
            if not result["passed"]:
                report.errors.append(f"TensorRT plan {name} failed the {precision} parity gate: "
                                     f"{', '.join(result['failed'])}")
            if throughput:
                info["inspection"][modality] = trt_export.inspect_plan(plan)
    report.tensorrt = info
    return plans, timing_cache


def _write_engine_dir(model: SpLIP, out_dir: Path, graphs: dict, plans: dict[str, bytes], timing_cache: bytes,
                      precision: str, opset: int, overrides: dict[str, float], report: ExportReport) -> None:
    """Write graphs, plans, checkpoint; then manifest.json last (an old one is removed first, so a
    half-rewritten dir never carries a valid-looking manifest)."""
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for modality, graph in graphs.items():
        name = f"{modality}.onnx"
        write_with_atomic(out_dir / name, lambda tmp, g=graph: onnx.save(g, str(tmp)))
        files[name] = describe_file(out_dir, name, "onnx", modality)
    for name, plan in plans.items():
        write_bytes_atomic(out_dir / name, plan)
        files[name] = describe_file(out_dir, name, "tensorrt", name.split(".")[0])
    if timing_cache:  # named for this GPU + TensorRT version (tensorrt.timing_cache_name)
        cache_file = report.tensorrt["timing_cache"]["file"]
        write_bytes_atomic(out_dir / cache_file, timing_cache)
        files[cache_file] = describe_file(out_dir, cache_file, "tensorrt-timing-cache")
    for modality, (xml, weights) in report.openvino_ir.items():
        for name, data, kind in ((f"{modality}.openvino.bin", weights, "openvino-weights"),
                                 (f"{modality}.openvino.xml", xml, "openvino-ir")):
            write_bytes_atomic(out_dir / name, data)
            files[name] = describe_file(out_dir, name, kind, modality)
    if report.held_out:  # the int8 engines' load gate runs on them (runtime/openvino_backend.py)
        write_held_out(out_dir / HELD_OUT_FILE, report.held_out)
        files[HELD_OUT_FILE] = describe_file(out_dir, HELD_OUT_FILE, "calibration-held-out")
    save_checkpoint(model, out_dir / CHECKPOINT_DIR)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        relative = f"{CHECKPOINT_DIR}/{name}"
        files[relative] = describe_file(out_dir, relative, "splip-checkpoint")
    write_manifest(out_dir, _manifest(model, precision, opset, overrides, files, report))
    report.files = sorted(files) + [MANIFEST_FILE]


def _versions() -> dict[str, str]:
    import onnx
    import open_clip
    import torch

    ort = import_onnxruntime()
    return {"splip_engine": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "open_clip": open_clip.__version__}


def _manifest(model: SpLIP, precision: str, opset: int, overrides: dict[str, float],
              files: dict[str, dict[str, Any]], report: ExportReport) -> dict[str, Any]:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    size = model.image_size
    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "model_config": model.cfg.to_dict(),
        "image_size": size,
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "preprocess": dict(PREPROCESS),
        "embedding_dim": model.embed_dim,
        "precision": precision,
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [BATCH_AXIS, 3, size, size]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [BATCH_AXIS, model.embed_dim]},
        "files": files,
        "parity": report.parity,
        "threshold_overrides": dict(overrides),
        "fused_attention": report.fused_attention,
        "onnx_check": report.onnx_check,
    }
    if report.tensorrt:
        manifest["tensorrt"] = report.tensorrt
    if report.calibration:
        manifest["calibration"] = {"towers": report.calibration, "openvino_parity": report.openvino}
    return manifest
