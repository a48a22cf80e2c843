"""The CPU engine table (issue 19): torch eager, ONNX Runtime fp32 / int8 dynamic / int8 static,
OpenVINO f32 / bf16 / int8 (ours), OpenVINO as a user would run our ONNX (no settings), NNCF int8
as OpenVINO's docs show (nncf.quantize with defaults, compiled with defaults), and what
`load_engine(dir, device="cpu")` picks, on the ViT-B/32 sketch tower, side by side in one process
(round robin, medians); only the timing holds /tmp/splip-cpu.lock.

Usage: python benchmarks/bench_cpu_engines.py FP32_DIR INT8_STATIC_DIR CALIBRATION_DIR OUT.json
(FP32_DIR from `export --clip-model ViT-B-32 --pretrained ''`, INT8_STATIC_DIR the same with
`--int8 --calibration CALIBRATION_DIR`.)
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BATCHES = {1: 10, 16: 3, 64: 2}  # batch -> timed rounds


def _openvino_request(model, config=None):
    from splip_engine.optional import import_openvino

    ov = import_openvino()

    request = ov.Core().compile_model(model, "CPU", config or {}).create_infer_request()

    def embed(pixels):
        request.infer({0: pixels})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    return embed


def build(fp32_dir: Path, int8_dir: Path, calibration: Path) -> tuple[dict, object]:
    import onnx
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from splip_engine.checkpoint import load_checkpoint
    from splip_engine.data.transforms import PreprocessSpec
    from splip_engine.export.calibration import read_calibration
    from splip_engine.export.parity import onnxruntime_embedder, torch_embedder
    from splip_engine.export.precision import convert_precision
    from splip_engine.optional import import_nncf, import_openvino
    from splip_engine.runtime import load_engine

    nncf, ov = import_nncf(), import_openvino()

    model = load_checkpoint(fp32_dir / "checkpoint").eval()
    onnx_path = str(fp32_dir / "sketch.onnx")
    engines = {
        "torch_fp32": torch_embedder(model, "sketch"),
        "ort_fp32": load_engine(fp32_dir, backend="onnxruntime", device="cpu"),
        "ort_int8_dynamic": onnxruntime_embedder(convert_precision(onnx.load(onnx_path), "int8"), spinning=False),
        "ort_int8_static": load_engine(int8_dir, backend="onnxruntime", device="cpu"),
        "openvino_user_default": _openvino_request(onnx_path),
        "openvino_f32": load_engine(fp32_dir, backend="openvino", device="cpu", precision="f32"),
        "openvino_bf16": load_engine(fp32_dir, backend="openvino", device="cpu", precision="bf16"),
        "openvino_int8_ours": load_engine(int8_dir, backend="openvino", device="cpu"),
    }
    spec = PreprocessSpec(image_size=model.image_size, mean=tuple(OPENAI_DATASET_MEAN), std=tuple(OPENAI_DATASET_STD))
    pixels = read_calibration({"sketch": str(calibration / "sketch"), "photo": str(calibration / "photo")},
                              spec, count=32).pixels["sketch"]
    docs = nncf.quantize(ov.Core().read_model(onnx_path), nncf.Dataset([pixels[i:i + 1] for i in range(len(pixels))]))
    engines["nncf_int8_as_docs"] = _openvino_request(docs)
    os.environ["SPLIP_ENGINE_CACHE"] = tempfile.mkdtemp(prefix="splip-auto-")
    auto = load_engine(fp32_dir, device="cpu")
    engines[f"auto ({auto.backend} {getattr(auto, 'precision', 'fp32')})"] = auto
    return {name: (lambda p, e=e: e.embed_pixels(p, "sketch")) if hasattr(e, "embed_pixels") else e
            for name, e in engines.items()}, model


def main(fp32_dir: str, int8_dir: str, calibration: str, out: str) -> None:
    import torch

    from splip_engine.bench import machine_info, parity_vs_torch, time_interleaved
    from splip_engine.runtime.cpu_features import read_cpu_features

    torch.set_num_threads(2)
    embedders, model = build(Path(fp32_dir), Path(int8_dir), Path(calibration))
    parity = parity_vs_torch(model, "sketch", embedders)
    rows = []
    with open("/tmp/splip-cpu.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for batch, rounds in BATCHES.items():
            times = time_interleaved(embedders, model.image_size, batch, rounds)
            base = float(np.median(times["ort_fp32"]))
            for name, t in times.items():
                seconds = float(np.median(t))
                rows.append({"engine": name, "batch": batch, "img_per_s": batch / seconds,
                             "p50_ms": 1e3 * seconds, "p99_ms": 1e3 * float(np.percentile(t, 99)),
                             "vs_ort_fp32": base / seconds, "rounds": rounds, **parity[name]})
    features = read_cpu_features()
    result = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "command": " ".join(["python"] + sys.argv), "cpu_model": features.model, "cpu_flags": features.names(),
              "machine": machine_info(2), "rows": rows}
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print("| engine | batch | img/s | p50 ms | p99 ms | vs ORT fp32 | min cosine vs torch | top-10 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['engine']} | {r['batch']} | {r['img_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['vs_ort_fp32']:.2f}x | {r['min_cosine']:.5f} | {r['top10_agreement']:.3f} |")


if __name__ == "__main__":
    main(*sys.argv[1:5])
