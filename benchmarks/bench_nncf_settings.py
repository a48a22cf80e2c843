"""NNCF settings for the OpenVINO int8 engine (issue 19): speed at batch 16 and agreement with
torch fp32 of one tower quantized several ways, side by side in one process (round robin,
medians), every IR compiled as the runtime compiles it (bf16 where the CPU has it, for what is not
quantized). Agreement on the held-out calibration images (what the int8 gates use) and on the
synthetic parity probe (out of distribution: shows clipping by calibrated ranges).

Rows: NNCF as OpenVINO's docs show (`nncf.quantize(model, dataset)`, every default, 32 images);
defaults on 128 images; the transformer scheme with its MIXED preset, with and without SmoothQuant
(the engine's previous setting: with); and the engine's `quantize_openvino` (transformer scheme,
PERFORMANCE preset, no SmoothQuant).

Usage: python benchmarks/bench_nncf_settings.py ENGINE_DIR CALIBRATION_DIR OUT.json [--modality sketch]
(ENGINE_DIR from `export --clip-model ViT-B-32 --pretrained ''`; CALIBRATION_DIR holds sketch/ and
photo/, e.g. `splip-engine data mini --out DIR --classes 8 --per-class 20 --size 224`.)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    import onnx
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from splip_engine.bench import machine_info, time_interleaved
    from splip_engine.checkpoint import load_checkpoint
    from splip_engine.data.transforms import PreprocessSpec
    from splip_engine.export import parity
    from splip_engine.export.calibration import (
        calibration_sources,
        openvino_embedder,
        quantize_openvino,
        read_calibration,
    )
    from splip_engine.optional import import_nncf, import_openvino
    from splip_engine.runtime.cpu_features import read_cpu_features

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine_dir", type=Path)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--modality", default="sketch", choices=("sketch", "photo"))
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    nncf, ov = import_nncf(), import_openvino()

    model = load_checkpoint(args.engine_dir / "checkpoint").eval()
    spec = PreprocessSpec(image_size=model.image_size, mean=tuple(OPENAI_DATASET_MEAN), std=tuple(OPENAI_DATASET_STD))
    calibrated = read_calibration(calibration_sources(args.calibration), spec, count=128)
    pixels, held_out = calibrated.pixels[args.modality], calibrated.held_out[args.modality]
    onnx_path = str(args.engine_dir / f"{args.modality}.onnx")
    probe = parity.probe_images(model.image_size)
    torch_embed = parity.torch_embedder(model, args.modality)
    references = {"held_out": parity.embed_batched(torch_embed, held_out),
                  "probe": parity.embed_batched(torch_embed, probe)}

    def dataset(n: int):
        return nncf.Dataset([pixels[i:i + 1] for i in range(n)])

    def transformer(smooth_quant: bool):
        advanced = None if smooth_quant else nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1))
        return nncf.quantize(ov.Core().read_model(onnx_path), dataset(len(pixels)), subset_size=len(pixels),
                             model_type=nncf.ModelType.TRANSFORMER, advanced_parameters=advanced)

    variants = {
        "nncf defaults, 32 images (OpenVINO's docs)":
            lambda: nncf.quantize(ov.Core().read_model(onnx_path), dataset(32)),
        "nncf defaults, 128 images": lambda: nncf.quantize(ov.Core().read_model(onnx_path), dataset(len(pixels)),
                                                           subset_size=len(pixels)),
        "transformer, MIXED, SmoothQuant (previous engine setting)": lambda: transformer(True),
        "transformer, MIXED, no SmoothQuant": lambda: transformer(False),
        "engine: transformer, PERFORMANCE, no SmoothQuant": lambda: quantize_openvino(onnx.load(onnx_path), pixels),
    }
    hint = "bf16" if read_cpu_features().bf16 else "f32"
    embedders, rows = {}, {}
    for name, quantize in variants.items():
        embed = embedders[name] = openvino_embedder(quantize(), hint)
        rows[name] = {}
        for images, batch in (("held_out", held_out), ("probe", probe)):
            report = parity.compare(references[images], parity.embed_batched(embed, batch), {})
            rows[name].update({f"{images}_min_cosine": report["min_cosine"],
                               f"{images}_top10": report["top10_agreement"]})
        print(name, rows[name], flush=True)
    times = time_interleaved(embedders, model.image_size, 16, args.rounds)
    docs = float(np.median(times[next(iter(variants))]))
    for name, t in times.items():
        rows[name].update({"batch16_img_per_s": 16 / float(np.median(t)), "vs_docs": docs / float(np.median(t))})
    features = read_cpu_features()
    result = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "command": " ".join(["python"] + sys.argv), "cpu_model": features.model, "cpu_flags": features.names(),
              "machine": machine_info(2), "modality": args.modality, "held_out_images": len(held_out),
              "calibration_images": len(pixels), "rounds": args.rounds, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| NNCF settings | batch 16 img/s | vs docs | held-out min cos | held-out top-10 | probe min cos "
          "| probe top-10 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['batch16_img_per_s']:.1f} | {r['vs_docs']:.2f}x | {r['held_out_min_cosine']:.5f} | "
              f"{r['held_out_top10']:.3f} | {r['probe_min_cosine']:.5f} | {r['probe_top10']:.3f} |")


if __name__ == "__main__":
    main()
