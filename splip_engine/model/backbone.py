"""open_clip backbone creation: our presets (`tiny`), pretrained tags or local files, clear errors."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch.nn as nn

from splip_engine.errors import PretrainedWeightsError, SpLIPError

logger = logging.getLogger(__name__)

_PRESET_DIR = Path(__file__).parent / "configs"
PRESETS = {p.stem: p for p in sorted(_PRESET_DIR.glob("*.json"))}
"""Model configs of ours, registered with open_clip under their file stem (e.g. `tiny`)."""

_registered = False


def _register_presets() -> None:
    global _registered
    if not _registered:
        import open_clip

        for path in PRESETS.values():
            open_clip.add_model_config(path)
        _registered = True


def list_clip_models() -> list[str]:
    """Every model name `SpLIPConfig.clip_model` accepts."""
    import open_clip

    _register_presets()
    return open_clip.list_models()


def create_clip(clip_model: str, pretrained: str) -> nn.Module:
    """Build the open_clip CLIP model `clip_model` with weights `pretrained` (tag, file or "").

    Fails in one clear line when the name is unknown or the weights cannot be had (offline).
    """
    import open_clip

    _register_presets()
    name = clip_model.replace("/", "-")
    if name not in open_clip.list_models():
        raise SpLIPError(
            f"unknown clip_model {clip_model!r}; valid names include 'tiny', 'ViT-B-32', 'ViT-B-16' "
            f"(all: splip_engine.model.list_clip_models())"
        )
    is_file = bool(pretrained) and (os.path.sep in pretrained or Path(pretrained).suffix != "")
    if is_file and not Path(pretrained).is_file():
        raise PretrainedWeightsError(f"pretrained weights file not found: {pretrained}")
    if pretrained and not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(name):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise PretrainedWeightsError(
            f"pretrained={pretrained!r} is neither a file nor a known tag for {name} "
            f"(known tags: {tags or 'none'}); pass a local checkpoint file path or '' for random init"
        )
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None, device="cpu")
    except RuntimeError as e:
        if is_file:
            raise PretrainedWeightsError(
                f"could not load CLIP weights from {pretrained} into {name}: {str(e).splitlines()[0]}"
            ) from e
        raise PretrainedWeightsError(
            f"could not download the {name} weights for pretrained={pretrained!r} (offline? "
            f"{str(e).splitlines()[0][:160]}); download them elsewhere and pass the file instead: "
            f"--pretrained /path/to/{name}.pt (SpLIPConfig(pretrained='/path/to/file'))"
        ) from e
    _check_supported(model, name)
    return model


def _check_supported(model: nn.Module, name: str) -> None:
    """SpLIP's prompted towers reuse open_clip's standard ViT blocks; refuse anything else."""
    from open_clip.model import CLIP
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    visual = getattr(model, "visual", None)
    if not isinstance(model, CLIP) or not isinstance(visual, VisionTransformer):
        raise SpLIPError(f"clip_model {name!r} is not an open_clip ViT CLIP; SpLIP needs one (e.g. ViT-B-32)")
    if visual.attn_pool is not None or visual.pool_type != "tok" or getattr(model, "text_pool_type", "argmax") != "argmax":
        raise SpLIPError(f"clip_model {name!r} uses attention/avg pooling; SpLIP supports CLS-token ViTs")
    blocks = list(visual.transformer.resblocks) + list(model.transformer.resblocks)
    if not all(isinstance(b, ResidualAttentionBlock) for b in blocks):
        raise SpLIPError(f"clip_model {name!r} uses custom attention blocks; SpLIP supports standard ViT blocks")
