"""Options shared by several commands, defined once."""
from __future__ import annotations

import click

device_option = click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to run: auto picks cuda when a GPU is visible and a backend that runs there is installed "
         "(TensorRT, onnxruntime-gpu, or torch from the engine's checkpoint), else cpu.",
)
backend_option = click.option(
    "--backend", default="auto", show_default=True,
    type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]),
    help="Inference backend; auto picks, on cuda, TensorRT > ONNX Runtime CUDA > torch (fp16 engines in fp16, "
         "CUDA graphs), on cpu, ONNX Runtime > torch. `--backend torch --device cuda` is the torch CUDA engine.",
)
batch_size_option = click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
                                  help="Images per batch.")
fp16_option = click.option("--fp16", is_flag=True, help="Half precision (fp16) engines / inference.")


def data_options(f):
    """--data-root (with sketch/ and photo/ inside) or --sketch-root/--photo-root, and --split."""
    f = click.option("--split", default=None,
                     help="Unseen classes: sketchy25|sketchy21|tuberlin30|quickdraw30 or a file with one class per "
                          "line. Default: DATA_ROOT/unseen.txt.")(f)
    f = click.option("--photo-root", type=click.Path(), default=None, help="PHOTO_ROOT/<class>/* photos.")(f)
    f = click.option("--sketch-root", type=click.Path(), default=None, help="SKETCH_ROOT/<class>/* sketches.")(f)
    return click.option("--data-root", type=click.Path(), default=None,
                        help="A dataset dir holding sketch/ and photo/ (e.g. from `splip-engine data mini`).")(f)


def resolve_data_roots(data_root, sketch_root, photo_root, split) -> tuple[str, str, str]:
    """(sketch_root, photo_root, split) from the data options, with a clear error when incomplete."""
    from pathlib import Path

    from splip_engine.errors import SpLIPError

    if data_root:
        sketch_root = sketch_root or str(Path(data_root) / "sketch")
        photo_root = photo_root or str(Path(data_root) / "photo")
        if split is None and (Path(data_root) / "unseen.txt").is_file():
            split = str(Path(data_root) / "unseen.txt")
    if not sketch_root or not photo_root:
        raise SpLIPError("no dataset given: pass --data-root DIR (with sketch/ and photo/) or --sketch-root and "
                         "--photo-root (make a small one with `splip-engine data mini --out mini/`)")
    if split is None:
        raise SpLIPError("no split given: pass --split sketchy25|sketchy21|tuberlin30|quickdraw30 or a class list file")
    return sketch_root, photo_root, split
