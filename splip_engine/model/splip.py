"""SpLIP: a frozen open_clip CLIP with prompts flowing both ways between its towers (SPEC.md §1).

`encode` reads in the paper's order: patch embeddings E_0 -> B_t -> prompted text pass (cut at
EOT) -> pooled hidden states W_l -> B_vt -> V_ms,l; template embeddings -> B_v -> V_tg; then the
deep-prompted vision pass. With `prompts=False` every step degenerates to plain CLIP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from splip_engine.config import MODALITIES, SpLIPConfig
from splip_engine.errors import SpLIPError
from splip_engine.model.attention import ATTENTION_IMPLS, block_forward
from splip_engine.model.prompts import TemplateToVisionPrompts, TextToVisionLayerPrompts, VisionToTextPrompts


class SpLIP(nn.Module):
    """SpLIP encoder around `clip` (an open_clip CLIP ViT). Only the mapping blocks and, with
    `train_layernorm`, the towers' LayerNorms are trainable; the rest is frozen and stays in eval."""

    def __init__(self, cfg: SpLIPConfig, clip: nn.Module, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.clip = clip
        self.tokenizer = tokenizer
        self.kernels = "torch"
        visual = clip.visual
        self.vision_width = visual.conv1.out_channels
        self.text_width = clip.transformer.width
        self.embed_dim = visual.output_dim
        self.image_size = int(visual.image_size[0])
        n_layers = min(len(visual.transformer.resblocks), len(clip.transformer.resblocks))
        self.prompt_depth = cfg.prompt_depth or n_layers
        if self.prompt_depth > n_layers:
            raise SpLIPError(f"SpLIPConfig.prompt_depth={cfg.prompt_depth} exceeds the towers' {n_layers} layers")

        for modality in MODALITIES:
            ids, lengths = self._tokenize_prompt_texts(modality)
            template = self.tokenizer([self._template(modality)])[0]
            prefix = template[: int(template.argmax())]  # [SOS] template words, without EOT
            self.register_buffer(f"_template_ids_{modality}", prefix.clone(), persistent=False)  # (P_tg,)
            self.register_buffer(f"_text_ids_{modality}", ids, persistent=False)  # (C, L) int64
            self.register_buffer(f"_text_lengths_{modality}", lengths, persistent=False)  # (C,) int64

        blocks = cfg.mapping_blocks  # the ablation switches (SpLIPConfig.use_b_*): absent blocks are None
        self.text_prompter = (VisionToTextPrompts(self.vision_width, self.text_width, cfg.n_text_prompts)
                              if "B_t" in blocks else None)
        self.template_prompter = TemplateToVisionPrompts(self.text_width, self.vision_width) if "B_v" in blocks else None
        self.layer_prompter = (TextToVisionLayerPrompts(self.text_width, self.vision_width, cfg.n_vt_prompts,
                                                        self.prompt_depth) if "B_vt" in blocks else None)
        self._freeze_backbone()

    # ----------------------------------------------------------------- setup
    def _tokenize_prompt_texts(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of `"{template}"` (or one `"{template} {class}"` per seen class) cut after EOT."""
        template = self._template(modality)
        if self.cfg.vt_context == "classes" and self.cfg.prompts:
            texts = [f"{template} {name.replace('_', ' ')}" for name in self.cfg.seen_classes]
        else:
            texts = [template]
        ids = self.tokenizer(texts)  # (C, context_length)
        lengths = ids.argmax(dim=-1) + 1  # EOT has the largest id; length includes it
        return ids[:, : int(lengths.max())].clone(), lengths

    def _template(self, modality: str) -> str:
        return self.cfg.sketch_template if modality == "sketch" else self.cfg.photo_template

    def _freeze_backbone(self) -> None:
        for p in self.clip.parameters():
            p.requires_grad_(False)
        if self.cfg.prompts and self.cfg.train_layernorm:
            for module in self.clip.modules():
                if isinstance(module, nn.LayerNorm):
                    for p in module.parameters():
                        p.requires_grad_(True)
            self.clip.ln_final.requires_grad_(False)  # only the frozen t(c) path uses it: no gradient
        self.clip.eval()

    def train(self, mode: bool = True) -> "SpLIP":
        """Mapping blocks follow `mode`; the frozen CLIP always stays in eval (no dropout)."""
        super().train(mode)
        self.clip.eval()
        return self

    def set_kernels(self, kernels: str) -> "SpLIP":
        """Route every attention call through ATTENTION_IMPLS[kernels] (`torch` or `triton`)."""
        if kernels not in ATTENTION_IMPLS:
            raise SpLIPError(f"kernels={kernels!r}: choose one of {sorted(ATTENTION_IMPLS)}")
        self.kernels = kernels
        return self

    # ---------------------------------------------------------------- encode
    def encode(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        """Images (B, 3, H, W), preprocessed -> L2-normalised embeddings (B, D)."""
        return self.encode_with_tokens(images, modality)[0]

    def encode_with_tokens(self, images: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (B, D) and the final-layer visual tokens (B, N, Dv) (the jigsaw solver's input)."""
        if modality not in MODALITIES:
            raise SpLIPError(f"modality={modality!r}: must be one of {MODALITIES}")
        patches = self.patch_embeddings(images)  # E_0: (B, Np, Dv)
        prompts = self.visual_prompts(patches, modality)
        tokens = self.vision_transformer(patches, prompts)  # (B, 1 + P + Np, Dv)
        pooled = self.clip.visual.ln_post(tokens[:, 0]) @ self.clip.visual.proj  # (B, D)
        return F.normalize(pooled, dim=-1), tokens

    def visual_prompts(self, patches: torch.Tensor, modality: str) -> list[torch.Tensor] | None:
        """Per prompted layer l, the visual prompt tokens [V_tg ; V_ms,l] (B, P, Dv) of the blocks
        this config builds; None when it builds neither B_v nor B_vt."""
        parts = []
        if self.template_prompter is not None:
            template_prompts = self.template_prompts(modality)  # B_v -> V_tg: (P_tg, Dv)
            parts.append([template_prompts.unsqueeze(0)] * self.prompt_depth)  # depth x (1, P_tg, Dv)
        if self.layer_prompter is not None:
            parts.append(self.layer_prompts(patches, modality))  # depth x (B or 1, n, Dv)
        if not parts:
            return None
        batch = patches.shape[0]
        return [torch.cat([p.expand(batch, -1, -1) for p in per_layer], dim=1) for per_layer in zip(*parts)]

    def template_prompts(self, modality: str) -> torch.Tensor:
        """V_tg = B_v(token embeddings of `[SOS] {template}`) (P_tg, Dv); input-independent."""
        prefix = self.clip.token_embedding(getattr(self, f"_template_ids_{modality}"))  # (P_tg, Dt)
        return self.template_prompter(prefix)

    def layer_prompts(self, patches: torch.Tensor, modality: str) -> list[torch.Tensor]:
        """V_ms,l = B_vt(W_l) per prompted layer: depth x (B, n, Dv), with W_l from the text pass
        prompted by B_t's T; without B_t, depth x (1, n, Dv), the same for every image."""
        text_prompts = self.text_prompter(patches) if self.text_prompter is not None else None  # T: (B, m, Dt)
        pooled_states = self.prompted_text_states(text_prompts, modality)  # depth x (B or 1, Dt)
        return self.layer_prompter(pooled_states)

    def constant_prompts(self, modality: str) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The prompts that do not depend on the image, by the method computing them (exporters
        bake them): `template_prompts` (V_tg, with B_v) and, with B_vt but without B_t,
        `layer_prompts` (V_ms,l)."""
        constant: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        if self.template_prompter is not None:
            constant["template_prompts"] = self.template_prompts(modality)
        if self.layer_prompter is not None and self.text_prompter is None:
            constant["layer_prompts"] = self.layer_prompts(None, modality)
        return constant

    def prompted_text_states(self, text_prompts: torch.Tensor | None, modality: str) -> list[torch.Tensor]:
        """Run `[SOS] T {template} [class] [EOT]` through the text tower, cut at EOT (exact under
        causal attention), and return W_l pooled per layer (SPEC §1 B_vt), averaged over classes.
        text_prompts T (B, m, Dt), or None (no B_t): the pass runs once, without T -> (1, Dt) each."""
        ids = getattr(self, f"_text_ids_{modality}")  # (C, L)
        lengths = getattr(self, f"_text_lengths_{modality}")  # (C,)
        batch, m = text_prompts.shape[:2] if text_prompts is not None else (1, 0)
        n_texts, n_tokens = ids.shape
        words = self.clip.token_embedding(ids)  # (C, L, Dt)
        words = words.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * n_texts, n_tokens, -1)
        if m:
            prompts = text_prompts.unsqueeze(1).expand(-1, n_texts, -1, -1).reshape(batch * n_texts, m, -1)
            x = torch.cat([words[:, :1], prompts, words[:, 1:]], dim=1)  # (B*C, L + m, Dt)
        else:
            x = words  # (C, L, Dt)
        x = x + self.clip.positional_embedding[: n_tokens + m]

        positions = torch.arange(n_tokens + m, device=ids.device)
        if self.cfg.vt_pool == "prompt":  # every position up to each text's EOT
            valid = positions.unsqueeze(0) < (lengths + m).unsqueeze(1)  # (C, L + m)
        else:  # the m prompt positions only
            valid = ((positions >= 1) & (positions <= m)).unsqueeze(0).expand(n_texts, -1)
        weights = (valid.float() / valid.sum(dim=1, keepdim=True)).to(x.dtype)  # (C, L + m)

        pooled_states = []
        for layer, block in enumerate(self.clip.transformer.resblocks[: self.prompt_depth]):
            if layer > 0 and m:  # deep prompting: the same T re-inserted at every layer
                x = torch.cat([x[:, :1], prompts, x[:, 1 + m:]], dim=1)
            x = block_forward(block, x, causal=True, impl=self.kernels)  # (B*C, L + m, Dt)
            per_text = torch.einsum("bcld,cl->bcd", x.view(batch, n_texts, n_tokens + m, -1), weights)
            pooled_states.append(per_text.mean(dim=1))  # (B, Dt)
        return pooled_states

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """E_0: the patch conv's output (B, Np, Dv), before position embeddings."""
        x = self.clip.visual.conv1(images.to(self.clip.visual.conv1.weight.dtype))  # (B, Dv, g, g)
        return x.flatten(2).transpose(1, 2)  # (B, Np, Dv)

    def vision_transformer(self, patches: torch.Tensor, prompts: list[torch.Tensor] | None) -> torch.Tensor:
        """`[CLS] prompts patches` through the ViT with the prompts re-inserted at every prompted
        layer (MaPLe-style); prompts carry no position embedding. Returns the final tokens."""
        visual = self.clip.visual
        batch = patches.shape[0]
        cls = (visual.class_embedding + visual.positional_embedding[0]).expand(batch, 1, -1)  # (B, 1, Dv)
        patches = patches + visual.positional_embedding[1:]  # (B, Np, Dv)
        n_prompts = prompts[0].shape[1] if prompts else 0
        first = [prompts[0]] if prompts else []
        x = visual.ln_pre(torch.cat([cls, *first, patches], dim=1))  # (B, 1 + P + Np, Dv)
        for layer, block in enumerate(visual.transformer.resblocks):
            if prompts and 0 < layer < len(prompts):
                x = torch.cat([x[:, :1], prompts[layer], x[:, 1 + n_prompts:]], dim=1)
            x = block_forward(block, x, impl=self.kernels)
        return x

    # ------------------------------------------------------------ plain text
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Un-prompted CLIP text embeddings (B, D), L2-normalised, of token ids (B, L) (causal,
        so ids may be cut after the longest EOT)."""
        return encode_text_ids(self.clip, ids, impl=self.kernels)

    @torch.no_grad()
    def class_text_embeddings(self, class_names: list[str], template: str = "a photo of a {}") -> torch.Tensor:
        """Frozen t(c) (C, D) of `template.format(c)` for each class (SPEC §2), un-prompted."""
        ids = cut_at_eot(self.tokenizer([template.format(c.replace("_", " ")) for c in class_names]))
        ids = ids.to(self.clip.token_embedding.weight.device)
        return self.encode_text(ids)

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts (trainable = mapping blocks + LayerNorms)."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}


def encode_text_ids(clip: nn.Module, ids: torch.Tensor, impl: str = "torch") -> torch.Tensor:
    """open_clip `CLIP.encode_text`, L2-normalised, for token ids (B, L) of any L up to the context:
    the text attention is causal, so ids cut after the longest EOT give the same embeddings at a
    fraction of the 77-token cost. Differentiable (the stand-in's pre-training uses it)."""
    x = clip.token_embedding(ids) + clip.positional_embedding[: ids.shape[1]]  # (B, L, Dt)
    for block in clip.transformer.resblocks:
        x = block_forward(block, x, causal=True, impl=impl)
    x = clip.ln_final(x)
    eot = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]  # (B, Dt)
    return F.normalize(eot @ clip.text_projection, dim=-1)


def cut_at_eot(ids: torch.Tensor) -> torch.Tensor:
    """Token ids (B, 77) cut after the longest EOT (the largest id in each row): (B, L)."""
    return ids[:, : int(ids.argmax(dim=-1).max()) + 1]
