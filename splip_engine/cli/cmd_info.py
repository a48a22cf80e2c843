"""`splip-engine info`: versions, devices and which optional backends import."""
from __future__ import annotations

import json

import click


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(as_json: bool) -> None:
    """Show versions (torch, open_clip, ONNX Runtime), CUDA devices, ORT providers, TensorRT/Triton.

    \b
    Example:
      splip-engine info --json
    """
    from splip_engine.info import collect_info

    report = collect_info()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        click.echo(f"{key:>24}: {value}")
