"""`splip-engine export`: a checkpoint -> ONNX (and TensorRT) engines, gated on parity."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from splip_engine.cli.options import check_pretrained, fp16_option
from splip_engine.errors import SpLIPError


def _parse_thresholds(pairs: tuple[str, ...]) -> dict[str, float]:
    """`METRIC=VALUE` pairs -> {metric: value}."""
    parsed = {}
    for pair in pairs:
        metric, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError("no '='")
            parsed[metric.strip()] = float(value)
        except ValueError as e:
            raise SpLIPError(f"--threshold {pair!r}: expected METRIC=NUMBER, e.g. --threshold min_cosine=0.998") from e
    return parsed


def _calibration(root: Path | None, sketch: str | None, photo: str | None) -> Path | dict[str, str] | None:
    """--calibration DIR, or --calibration-sketch / --calibration-photo (both), or None."""
    if root and (sketch or photo):
        raise SpLIPError("pass --calibration DIR or --calibration-sketch/--calibration-photo, not both")
    if sketch or photo:
        if not (sketch and photo):
            raise SpLIPError("static int8 calibrates both towers: pass both --calibration-sketch and --calibration-photo")
        return {"sketch": sketch, "photo": photo}
    return root


@click.command("export")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path),
              help="Checkpoint dir (from `train` / save_checkpoint). Default: the latest run's (runs/latest).")
@click.option("--clip-model", help="Export an untrained SpLIP on this CLIP model instead of a checkpoint.")
@click.option("--pretrained", callback=check_pretrained, help="With --clip-model: pretrained tag or weights file ('' = random init).")
@click.option("--out", "out_dir", default="engines", show_default=True, type=click.Path(path_type=Path),
              help="Engine dir to write.")
@fp16_option
@click.option("--int8", is_flag=True, help="int8 CPU engines: dynamically quantized for ONNX Runtime, or static "
                                          "with --calibration (ONNX Runtime QDQ + OpenVINO NNCF).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="With --int8: a dir holding sketch/ and photo/ (each any input `embed` reads) to calibrate the "
                   "sketch and photo engines on; some images are held out to gate the result.")
@click.option("--calibration-sketch", help="With --int8: sketches calibrating the sketch engine (folder, .txt list, "
                                           "parquet, tar shards, QuickDraw .ndjson).")
@click.option("--calibration-photo", help="With --int8: photos calibrating the photo engine (as --calibration-sketch).")
@click.option("--calibration-count", default=128, show_default=True, type=click.IntRange(min=1),
              help="Calibration images per tower (32 more are read and held out for the gate).")
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "tensorrt", "all"]),
              help="Engines to build; tensorrt needs TensorRT and a CUDA GPU (all: skipped without them).")
@click.option("--tensorrt-typing", default="auto", show_default=True, type=click.Choice(["auto", "strong", "weak"]),
              help="TensorRT fp16 plans: strongly typed from the fp16 ONNX (auto on TensorRT 11 and >= 10.12) or "
                   "weakly typed with the FP16 builder flag (TensorRT 10 only).")
@click.option("--opset", default=23, show_default=True, type=click.IntRange(18, 23), help="ONNX opset.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(min=1),
              help="Largest batch of the TensorRT throughput plan and the Triton models.")
@click.option("--allow-unfused", is_flag=True, help="Export even when attention is not fused in every layer.")
@click.option("--threshold", "thresholds", multiple=True, metavar="METRIC=VALUE",
              help="Override a parity bound (max_abs_diff, min_cosine, top10_agreement); recorded in the manifest.")
@click.option("--triton-repo", type=click.Path(file_okay=False, path_type=Path),
              help="Also lay the engines out as a Triton Inference Server model repository here.")
def command(checkpoint: Path | None, clip_model: str | None, pretrained: str | None, out_dir: Path, fp16: bool,
            int8: bool, fmt: str, opset: int, max_batch: int, allow_unfused: bool, thresholds: tuple[str, ...],
            triton_repo: Path | None, tensorrt_typing: str, calibration: Path | None, calibration_sketch: str | None,
            calibration_photo: str | None, calibration_count: int) -> None:
    """Export the sketch and photo encoders as engines checked against PyTorch before writing.

    \b
    Example:
      splip-engine export --fp16                       # latest training run -> engines/
      splip-engine export --checkpoint runs/x/ckpt --int8 --out engines-int8
      splip-engine export --int8 --calibration data/ --out engines-int8s   # data/sketch/, data/photo/
      splip-engine export --clip-model tiny --pretrained '' --format all --triton-repo triton/
    """
    from splip_engine.export import export_engines, find_latest_checkpoint

    overrides = _parse_thresholds(thresholds)
    calibration_set = _calibration(calibration, calibration_sketch, calibration_photo)
    if checkpoint and clip_model:
        raise SpLIPError("pass either --checkpoint DIR or --clip-model NAME, not both")
    if pretrained is not None and not clip_model:
        raise SpLIPError("--pretrained goes with --clip-model NAME (a checkpoint records its own backbone)")
    if clip_model:
        from splip_engine import SpLIPConfig, build_model

        kwargs = {} if pretrained is None else {"pretrained": pretrained}
        source = build_model(SpLIPConfig(clip_model=clip_model, **kwargs))
        label = f"untrained SpLIP on {clip_model}"
    else:
        source = checkpoint or find_latest_checkpoint()
        label = f"checkpoint {source}"
    click.echo(f"exporting {label} to {out_dir} (tracing both towers, then the parity gate)...")
    report = export_engines(
        source, out_dir, fp16=fp16, int8=int8, formats=fmt, opset=opset, max_batch=max_batch,
        allow_unfused=allow_unfused, thresholds=overrides, triton_repo=triton_repo, tensorrt_typing=tensorrt_typing,
        calibration=calibration_set, calibration_count=calibration_count,
    )
    for line in report.lines():
        click.echo(line)
    for error in report.errors:
        click.secho(f"error: {error}", err=True, fg="red")
    if not report:
        sys.exit(1)
