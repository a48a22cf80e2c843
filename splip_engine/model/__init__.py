"""SpLIP model on open_clip.

- config (../config.py): SpLIPConfig
- backbone: open_clip model creation, presets (`tiny`), pretrained weights with clear errors
- attention: transformer blocks through one attention switch (torch SDPA / Triton)
- prompts: the mapping blocks B_t, B_v, B_vt
- splip: the SpLIP module and its `encode`
- factory: build_model
"""
from splip_engine.model.backbone import PRESETS, list_clip_models
from splip_engine.model.factory import build_model
from splip_engine.model.splip import SpLIP

__all__ = ["PRESETS", "SpLIP", "build_model", "list_clip_models"]
