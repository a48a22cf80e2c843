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

_WEIGHTS_MAGIC = {b"PK\x03\x04": "a PyTorch checkpoint (zip)", b"\x80": "a PyTorch checkpoint (pickle)"}
_NOT_WEIGHTS_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                      b"RIFF": "a RIFF (WebP / WAV) file", b"%PDF": "a PDF", b"\x1f\x8b": "a gzip file"}


def check_pretrained(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """--pretrained's callback: a local file must look like weights (a PyTorch zip / pickle
    checkpoint or safetensors), so an image or a text file is one clear line, not an unpickler traceback."""
    from pathlib import Path

    from splip_engine.errors import SpLIPError

    if not value or not Path(value).is_file():
        return value  # a tag, '' (random init), or a missing file: the model factory says which
    with open(value, "rb") as f:
        head = f.read(16)
    if any(head.startswith(magic) for magic in _WEIGHTS_MAGIC) or _is_safetensors(head):
        return value
    what = next((name for magic, name in _NOT_WEIGHTS_MAGIC.items() if head.startswith(magic)),
                "empty" if not head else "not a PyTorch or safetensors file")
    raise SpLIPError(f"--pretrained {value} is not a weights file ({what}); pass an open_clip checkpoint "
                     "(.pt / .bin / .safetensors), a tag such as 'openai', or '' for random init")


def _is_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


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
    from splip_engine.errors import SpLIPError

    if data_root:
        if not Path(data_root).is_dir():
            what = "is a file, not a directory" if Path(data_root).exists() else "does not exist"
            raise SpLIPError(f"--data-root {data_root} {what}; make a dataset there with `splip-engine data mini --out "
                             f"{data_root}` or pass the folder that holds sketch/ and photo/")
        missing = [name for name in ("sketch", "photo") if not (Path(data_root) / name).is_dir()]
        if missing and not (sketch_root and photo_root):
            raise SpLIPError(f"--data-root {data_root} holds no {' and no '.join(m + '/' for m in missing)} folder; "
                             "pass the folder that holds sketch/<class>/ and photo/<class>/ (e.g. from "
                             "`splip-engine data mini`), or --sketch-root and --photo-root")
        sketch_root = sketch_root or str(Path(data_root) / "sketch")
        photo_root = photo_root or str(Path(data_root) / "photo")
        if split is None and (Path(data_root) / "unseen.txt").is_file():
            split = str(Path(data_root) / "unseen.txt")
    if dataset and split is None:
        split = get_layout(dataset).default_split
    return DataSource(dataset=dataset or "", root=root or "", sketch_root=sketch_root or "",
                      photo_root=photo_root or "", split=split or "")


def decode_budget_options(f):
    """--decode-timeout and --decode-memory: the budget one vector image (SVG, QuickDraw drawing)
    may take to render, set for the command (and its decode workers) before it runs."""
    import functools

    @functools.wraps(f)
    def with_budget(*args, decode_timeout: float, decode_memory: int, **kwargs):
        from splip_engine.data.sandbox import DecodeBudget, set_budget

        set_budget(DecodeBudget(timeout_s=decode_timeout, memory_mib=decode_memory))
        return f(*args, **kwargs)

    with_budget = click.option(
        "--decode-memory", default=512, show_default=True, type=click.IntRange(16, 1 << 20), metavar="MIB",
        help="Memory one SVG / QuickDraw image may use to render, in MiB; a file over it is listed as bad.",
    )(with_budget)
    return click.option(
        "--decode-timeout", default=2.0, show_default=True, type=click.FloatRange(0, 3600, min_open=True),
        metavar="SECONDS", help="Seconds of CPU one SVG / QuickDraw image may take to render, waiting at most 60x that "
                                "on a busy machine (then the render is stopped and the file listed as bad); "
                                "ordinary sketches take milliseconds.",
    )(with_budget)
