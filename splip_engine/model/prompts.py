"""The three learned mapping blocks that carry prompts between CLIP's towers (SPEC.md §1)."""
from __future__ import annotations

import torch
import torch.nn as nn


PROMPT_INIT_STD = 0.02
"""Std of the layers that emit prompt tokens (MaPLe / CoOp initialise prompts at 0.02): untrained
prompts start small, so an untrained SpLIP stays close to the frozen CLIP it wraps."""


def _prompt_head(d_in: int, d_out: int) -> nn.Linear:
    """A Linear emitting prompt tokens, initialised N(0, PROMPT_INIT_STD) with zero bias."""
    head = nn.Linear(d_in, d_out)
    nn.init.normal_(head.weight, std=PROMPT_INIT_STD)
    nn.init.zeros_(head.bias)
    return head


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), _prompt_head(d_hidden, d_out))


class VisionToTextPrompts(nn.Module):
    """B_t: patch embeddings E_0 (B, Np, Dv) -> m text prompt tokens T (B, m, Dt)."""

    def __init__(self, vision_width: int, text_width: int, n_prompts: int):
        super().__init__()
        self.n_prompts, self.text_width = n_prompts, text_width
        self.norm = nn.LayerNorm(vision_width)
        self.mlp = _mlp(vision_width, vision_width // 2, n_prompts * text_width)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        pooled = self.norm(patches).mean(dim=1)  # (B, Dv)
        return self.mlp(pooled).view(-1, self.n_prompts, self.text_width)  # (B, m, Dt)


class TemplateToVisionPrompts(nn.Module):
    """B_v: template-prefix token embeddings (P_tg, Dt) -> V_tg (P_tg, Dv), one per token."""

    def __init__(self, text_width: int, vision_width: int):
        super().__init__()
        self.mlp = _mlp(text_width, vision_width // 2, vision_width)

    def forward(self, template_embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlp(template_embeddings)  # (P_tg, Dv)


class TextToVisionLayerPrompts(nn.Module):
    """B_vt: pooled text hidden state W_l (B, Dt) of layer l -> V_ms,l (B, n, Dv), one head per layer."""

    def __init__(self, text_width: int, vision_width: int, n_prompts: int, depth: int):
        super().__init__()
        self.n_prompts, self.vision_width = n_prompts, vision_width
        self.heads = nn.ModuleList(_prompt_head(text_width, n_prompts * vision_width) for _ in range(depth))

    def forward(self, pooled_states: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            head(w).view(-1, self.n_prompts, self.vision_width)  # (B, n, Dv)
            for head, w in zip(self.heads, pooled_states)
        ]
