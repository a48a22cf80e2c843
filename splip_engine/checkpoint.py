"""SpLIP checkpoints: trainable tensors (safetensors) + config (JSON); the whole backbone too when
it has no pretrained source to rebuild it from (random init), so a loaded model equals the saved one."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from splip_engine.config import SpLIPConfig
from splip_engine.errors import CheckpointError
from splip_engine.io_utils import write_text_atomic, write_with_atomic
from splip_engine.model import SpLIP, build_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def checkpoint_tensors(model: SpLIP) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: trainable tensors, or every tensor when the backbone is random-init."""
    state = model.state_dict()
    if not model.cfg.pretrained:
        return state
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: t for name, t in state.items() if name in trainable}


def save_checkpoint(model: SpLIP, directory: str | Path) -> Path:
    """Write `model.safetensors` and `config.json` into `directory` (atomically); return it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint_tensors(model).items()}
    meta = {"format_version": str(FORMAT_VERSION), "full_backbone": str(not model.cfg.pretrained)}
    write_with_atomic(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    write_text_atomic(directory / CONFIG_FILE, json.dumps(model.cfg.to_dict(), indent=2))
    return directory


def load_checkpoint(directory: str | Path, **overrides) -> SpLIP:
    """Rebuild the model saved in `directory`. `overrides` replace config fields, e.g.
    `pretrained="/path/ViT-B-32.pt"` to take the backbone from a local file on an offline machine."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{directory} is not a SpLIP checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "write one with `splip-engine train` or splip_engine.save_checkpoint"
        )
    try:
        cfg = SpLIPConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        cfg = dataclasses.replace(cfg, **overrides)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {e}") from e
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} is unreadable ({e}); the checkpoint is damaged") from e
    model = build_model(cfg)
    load_tensors(model, tensors, source=str(directory))
    return model


def load_tensors(model: SpLIP, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy checkpoint `tensors` into `model`, refusing missing/extra names or shape mismatches."""
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    mismatched = sorted(k for k in tensors if k in state and state[k].shape != tensors[k].shape)
    expected = set(checkpoint_tensors(model))
    missing = sorted(expected - set(tensors))
    if unknown or mismatched or missing:
        detail = (mismatched or unknown or missing)[:3]
        raise CheckpointError(
            f"checkpoint {source} does not fit a {model.cfg.clip_model} SpLIP model "
            f"({len(mismatched)} shape mismatches, {len(unknown)} unknown, {len(missing)} missing tensors, "
            f"e.g. {detail}): it was written for a different backbone config"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor)
