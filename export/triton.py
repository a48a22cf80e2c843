"""Lay an engine dir out as an NVIDIA Triton Inference Server model repository.

One model per tower and engine format: `splip_<modality>_onnx` (onnxruntime_onnx) and, when
plans were built, `splip_<modality>_tensorrt` (tensorrt_plan, the throughput plan), each with
`config.pbtxt` (dynamic batching up to the engine's max batch) and `1/model.<ext>`.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

from splip_engine.io_utils import write_text_atomic, write_with_atomic

from .graph import INPUT_NAME, OUTPUT_NAME

_PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
QUEUE_DELAY_US = 2000
"""How long Triton may hold a request to batch it with others (latency bound, microseconds)."""


def model_config(name: str, platform: str, max_batch: int, image_size: int, embedding_dim: int) -> str:
    """config.pbtxt of one model: FP32 pixels (3, S, S) -> FP32 embeddings (D), dynamic batching."""
    preferred = sorted({b for b in (max_batch // 4, max_batch // 2, max_batch) if b >= 1})
    return (
        f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch}\n"
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ 3, {image_size}, {image_size} ] }} ]\n'
        f'output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {embedding_dim} ] }} ]\n'
        f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
        f"max_queue_delay_microseconds: {QUEUE_DELAY_US} }}\n"
    )


def write_triton_repo(repo: str | Path, engine_dir: str | Path, manifest: dict[str, Any], max_batch: int) -> list[Path]:
    """Copy the engine dir's towers into `repo` as Triton models; returns the model dirs."""
    repo, engine_dir = Path(repo), Path(engine_dir)
    plans = manifest.get("tensorrt", {}).get("plans", {})  # modality -> throughput plan file
    written = []
    for relative, entry in sorted(manifest["files"].items()):
        modality, kind = entry.get("modality"), entry["format"]
        if modality is None or kind not in _PLATFORMS or (kind == "tensorrt" and plans.get(modality) != relative):
            continue
        platform, filename = _PLATFORMS[kind]
        name = f"splip_{modality}_{kind}"
        model_dir = repo / name
        write_with_atomic(model_dir / "1" / filename, functools.partial(shutil.copyfile, engine_dir / relative))
        write_text_atomic(model_dir / "config.pbtxt", model_config(
            name, platform, max_batch, manifest["image_size"], manifest["embedding_dim"]))
        written.append(model_dir)
    return written
