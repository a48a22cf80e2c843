"""Options shared by several commands, defined once."""
from __future__ import annotations

import click

device_option = click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to run: auto picks cuda when a GPU is visible.",
)
backend_option = click.option(
    "--backend", default="auto", show_default=True,
    type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]),
    help="Inference backend; auto picks TensorRT > ONNX Runtime CUDA > ONNX Runtime CPU > torch.",
)
batch_size_option = click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
                                  help="Images per batch.")
fp16_option = click.option("--fp16", is_flag=True, help="Half precision (fp16) engines / inference.")
