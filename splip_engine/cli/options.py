"""Options shared by several commands, defined once."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from splip_engine.data.layouts import DataSource

device_option = click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to run: auto picks cuda when a GPU is visible and a backend that runs there is installed "
         "(TensorRT, onnxruntime-gpu, or torch from the engine's checkpoint), else cpu.",
)
backend_option = click.option(
    "--backend", default="auto", show_default=True,
    type=click.Choice(["auto", "torch", "onnxruntime", "openvino", "tensorrt"]),
    help="Inference backend; auto picks, on cuda, TensorRT > ONNX Runtime CUDA > torch (fp16 engines in fp16, "
         "CUDA graphs), on cpu, the fastest engine that passes its gate on this CPU (ONNX Runtime / OpenVINO, "
         "f32 / bf16 / int8; timed once and cached, SPLIP_CPU_ENGINE=openvino:f32 overrides), torch without ONNX. "
         "openvino: CPU only, bf16 where the CPU has it. `--backend torch --device cuda` is the torch CUDA engine.",
)
batch_size_option = click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
                                  help="Images per batch.")
fp16_option = click.option("--fp16", is_flag=True, help="Half precision (fp16) engines / inference.")


def training_options(f):
    """The SpLIP training recipe options of `train` and `ablate`: --epochs, --batch-size, --lr,
    --lr-layernorm, --alpha, --beta, --triplets-per-epoch, --workers."""
    options = [
        click.option("--epochs", default=60, show_default=True, type=click.IntRange(min=1)),
        batch_size_option,
        click.option("--lr", default=1e-3, show_default=True, type=float, help="LR of the mapping blocks and F_js."),
        click.option("--lr-layernorm", default=1e-5, show_default=True, type=float,
                     help="LR of the towers' LayerNorms."),
        click.option("--alpha", default=0.5, show_default=True, type=float, help="Weight of L_class."),
        click.option("--beta", default=0.1, show_default=True, type=float, help="Weight of L_cjs (jigsaw)."),
        click.option("--triplets-per-epoch", default=0, show_default=True, type=click.IntRange(min=0),
                     help="0 = one per training sketch."),
        click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0), help="DataLoader workers."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def data_options(f):
    """--dataset/--root (a dataset as distributed), --data-root (with sketch/ and photo/ inside) or
    --sketch-root/--photo-root, and --split; `resolve_data_roots` turns them into a DataSource."""
    from splip_engine.data.layouts import LAYOUTS

    f = click.option("--split", default=None,
                     help="Unseen classes: sketchy25|sketchy21|tuberlin30|quickdraw30 or a file with one class per "
                          "line. Default: the --dataset's standard split, or DATA_ROOT/unseen.txt.")(f)
    f = click.option("--photo-root", type=click.Path(), default=None, help="PHOTO_ROOT/<class>/* photos.")(f)
    f = click.option("--sketch-root", type=click.Path(), default=None, help="SKETCH_ROOT/<class>/* sketches.")(f)
    f = click.option("--data-root", type=click.Path(), default=None,
                     help="A dataset dir holding sketch/ and photo/ (e.g. from `splip-engine data mini`).")(f)
    f = click.option("--root", type=click.Path(), default=None,
                     help="The folder --dataset unpacked to (e.g. Sketchy/ holding 256x256/ and EXTEND_image_sketchy/).")(f)
    return click.option("--dataset", type=click.Choice(sorted(LAYOUTS)), default=None,
                        help="A dataset as the ZS-SBIR code bases distribute it (Sketchy-Ext, TU-Berlin-Ext, "
                             "QuickDraw-Ext), under --root; its class names are matched to the split files.")(f)


def resolve_data_roots(data_root: str | None, sketch_root: str | None, photo_root: str | None, split: str | None,
                       dataset: str | None = None, root: str | None = None) -> DataSource:
    """The DataSource the data options name, with a clear error when they are incomplete or mixed."""
    from pathlib import Path

    from splip_engine.data.layouts import DataSource, get_layout

    if data_root:
        sketch_root = sketch_root or str(Path(data_root) / "sketch")
        photo_root = photo_root or str(Path(data_root) / "photo")
        if split is None and (Path(data_root) / "unseen.txt").is_file():
            split = str(Path(data_root) / "unseen.txt")
    if dataset and split is None:
        split = get_layout(dataset).default_split
    return DataSource(dataset=dataset or "", root=root or "", sketch_root=sketch_root or "",
                      photo_root=photo_root or "", split=split or "")
