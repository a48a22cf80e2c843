"""SpLIPConfig: every architectural and loss choice of SPEC.md as one frozen, JSON-able dataclass."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODALITIES = ("sketch", "photo")
VT_CONTEXTS = ("template", "classes")
VT_POOLS = ("prompt", "learned")


@dataclass(frozen=True)
class SpLIPConfig:
    """SpLIP model + loss configuration (SPEC.md §1-§2). Vary it with `dataclasses.replace`."""

    clip_model: str = "ViT-B-32"
    """open_clip model name, or a preset of ours (`tiny`)."""
    pretrained: str = "openai"
    """open_clip pretrained tag (e.g. `openai`), a local checkpoint file, or "" for random init."""
    prompts: bool = True
    """False: no prompts at all and nothing trainable, the model is plain CLIP (parity mode)."""
    use_b_t: bool = True
    """B_t (vision -> text). False: the text pass gets no prompt tokens T, so W_l and V_ms,l depend
    only on the modality (constants per layer, baked at export)."""
    use_b_v: bool = True
    """B_v (template -> vision). False: no V_tg tokens in the visual sequence."""
    use_b_vt: bool = True
    """B_vt (text -> vision per layer). False: no V_ms,l tokens and no text pass; B_t then has no
    path to the image embedding, so it is not built either. All three False: only the towers'
    LayerNorms are trained (`train_layernorm`)."""
    vt_context: str = "template"
    """`template`: one text pass per image; `classes`: one per seen class name (SPEC §1)."""
    vt_pool: str = "prompt"
    """B_vt pooling of W_l: `prompt` = mean over every position of the prompted text up to EOT
    (sees the modality word and class names despite causal attention); `learned` = the m prompt
    positions only."""
    seen_classes: tuple[str, ...] = ()
    """Seen class names, used by vt_context='classes'."""
    prompt_depth: int = 0
    """Number of layers that receive deep prompts; 0 = all layers."""
    n_text_prompts: int = 4
    """m: text prompt tokens produced by B_t."""
    n_vt_prompts: int = 2
    """n: visual prompt tokens per layer produced by B_vt."""
    train_layernorm: bool = True
    """Also train the LayerNorm weights/biases of both towers."""
    sketch_template: str = "sketch of a"
    photo_template: str = "photo of a"
    seed: int = 0
    """Seed for the random init of the mapping blocks (and of the backbone when pretrained='')."""
    # losses (SPEC §2): L = triplet_weight * L_triplet + alpha * L_class + beta * L_cjs
    triplet_weight: float = 1.0
    """Weight of L_triplet (0 = "L_class only" ablation)."""
    alpha: float = 0.5
    beta: float = 0.1
    margin_scale: float = 0.25
    adaptive_margin: bool = True
    fixed_margin: float = 0.2
    jigsaw_grid: int = 3
    jigsaw_permutations: int = 30

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"SpLIPConfig.{name}={getattr(self, name)!r}: {why}")

        if not self.clip_model:
            raise bad("clip_model", "must name an open_clip model or a preset such as 'tiny'")
        if self.vt_context not in VT_CONTEXTS:
            raise bad("vt_context", f"must be one of {VT_CONTEXTS}")
        if self.vt_pool not in VT_POOLS:
            raise bad("vt_pool", f"must be one of {VT_POOLS}")
        if self.vt_context == "classes" and self.prompts and not self.seen_classes:
            raise bad("seen_classes", "vt_context='classes' needs the seen class names")
        if self.prompt_depth < 0:
            raise bad("prompt_depth", "must be >= 0 (0 = every layer)")
        for name in ("n_text_prompts", "n_vt_prompts", "jigsaw_grid", "jigsaw_permutations"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("triplet_weight", "alpha", "beta", "margin_scale", "fixed_margin"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.triplet_weight == self.alpha == self.beta == 0:
            raise bad("triplet_weight", "with alpha=0 and beta=0 there is no loss left: make one of them > 0")
        if self.vt_pool == "learned" and not self.use_b_t:
            raise bad("vt_pool", "'learned' pools the B_t prompt positions, which use_b_t=False removes; "
                      "use vt_pool='prompt'")
        if not isinstance(self.seen_classes, tuple):
            object.__setattr__(self, "seen_classes", tuple(self.seen_classes))

    @property
    def mapping_blocks(self) -> tuple[str, ...]:
        """The mapping blocks this config builds, of "B_t", "B_v", "B_vt" (none with prompts=False;
        B_t only with B_vt, its one path to the image)."""
        if not self.prompts:
            return ()
        built = {"B_t": self.use_b_t and self.use_b_vt, "B_v": self.use_b_v, "B_vt": self.use_b_vt}
        return tuple(name for name, on in built.items() if on)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seen_classes"] = list(self.seen_classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpLIPConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SpLIPConfig fields {unknown}; valid fields: {sorted(known)}")
        d = dict(d)
        if "seen_classes" in d:
            d["seen_classes"] = tuple(d["seen_classes"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from splip_engine.io_utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "SpLIPConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
