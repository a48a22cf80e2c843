"""open_clip backbone creation: our presets (`tiny`), pretrained tags or local files, clear errors."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch.nn as nn

from splip_engine.errors import PretrainedWeightsError, SpLIPError

logger = logging.getLogger(__name__)

_PRESET_DIR = Path(__file__).parent / "configs"
PRESETS = {p.stem: p for p in sorted(_PRESET_DIR.glob("*.json"))}
"""Model configs of ours, registered with open_clip under their file stem (e.g. `tiny`)."""

_registered = False


def register_presets() -> None:
    global _registered
    if not _registered:
        import open_clip

        for path in PRESETS.values():
            open_clip.add_model_config(path)
        _registered = True


def list_clip_models() -> list[str]:
    """Every model name `SpLIPConfig.clip_model` accepts."""
    import open_clip

    register_presets()
    return open_clip.list_models()


def create_clip(clip_model: str, pretrained: str) -> nn.Module:
    """Build the open_clip CLIP model `clip_model` with weights `pretrained` (tag, file or "").

    Fails in one clear line when the name is unknown or the weights cannot be had (offline).
    """
    import open_clip

    register_presets()
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
    if pretrained and not is_file:
        _check_download_possible(name, pretrained)
    try:
        if not pretrained:  # random init is intended here: silence open_clip's "no weights" warning
            logging.disable(logging.WARNING)
        model = open_clip.create_model(name, pretrained=pretrained or None, device="cpu")
    except RuntimeError as e:
        if is_file:
            raise PretrainedWeightsError(
                f"could not load CLIP weights from {pretrained} into {name}: {str(e).splitlines()[0]}"
            ) from e
        raise _offline_error(name, pretrained, str(e).splitlines()[0][:160]) from e
    finally:
        logging.disable(logging.NOTSET)
    _check_supported(model, name)
    return model


def _offline_error(name: str, pretrained: str, why: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"could not download the {name} weights for pretrained={pretrained!r} ({why}); download them "
        f"on a machine with internet access and pass the file instead: --pretrained /path/to/{name}.pt "
        f"(Python: SpLIPConfig(pretrained='/path/to/file'))"
    )


def _check_download_possible(name: str, tag: str, timeout_s: float = 3.0) -> None:
    """Fail fast, before open_clip's retry loops, when the weights are neither cached nor reachable."""
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(name, tag)
    hf_hub, url = pcfg.get("hf_hub", ""), pcfg.get("url", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf_hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in names):
            return
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise _offline_error(name, tag, "HF_HUB_OFFLINE is set and they are not in the cache")
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    elif url:
        if (Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)).is_file():
            return
        host = urlparse(url).hostname
    else:
        return
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        raise _offline_error(name, tag, f"not in the local cache and {host} is unreachable: {e}") from e


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
