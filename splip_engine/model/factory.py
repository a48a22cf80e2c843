"""build_model: the one way to build a SpLIP model from a SpLIPConfig."""
from __future__ import annotations

import torch

from splip_engine.config import SpLIPConfig
from splip_engine.model.backbone import create_clip
from splip_engine.model.splip import SpLIP


def build_model(cfg: SpLIPConfig) -> SpLIP:
    """Backbone per `cfg.clip_model` / `cfg.pretrained` (random init, seeded, when pretrained is ""),
    mapping blocks initialised from `cfg.seed`."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        clip = create_clip(cfg.clip_model, cfg.pretrained)
        tokenizer = open_clip.get_tokenizer(cfg.clip_model.replace("/", "-"))
        return SpLIP(cfg, clip, tokenizer)
