"""`splip-engine info`: versions, devices, CPU features and which optional backends import."""
from __future__ import annotations

import json

import click


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--engine", "engine_dir", type=click.Path(exists=True, file_okay=False),
              help="Also say which CPU engine backend=auto runs this engine dir with here (timed now unless cached).")
def command(as_json: bool, engine_dir: str | None) -> None:
    """Show versions (torch, open_clip, ONNX Runtime, OpenVINO), CUDA devices, ORT providers,
    TensorRT/Triton, the CPU features that matter (AVX2, AVX-512, AVX512_BF16, VNNI, AMX) and what
    `--backend auto` picks on this CPU.

    \b
    Example:
      splip-engine info --json
      splip-engine info --engine engines/
    """
    from splip_engine.info import collect_info, cpu_info

    report = collect_info()
    if engine_dir:
        report.update(cpu_info(engine_dir))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        click.echo(f"{key:>24}: {value}")
