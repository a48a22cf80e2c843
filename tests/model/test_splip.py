"""SpLIP model: parity with open_clip, EOT cut, prompts, trainability, frozen backbone."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from splip_engine import SpLIPConfig, SpLIPError, build_model
from splip_engine.model.attention import block_forward

# float32 rounding only: both paths run the same weights, attention differs in summation order.
PARITY_ATOL = 1e-5


def _plain(cfg: SpLIPConfig):
    return build_model(dataclasses.replace(cfg, prompts=False)).eval()


@pytest.mark.parametrize("clip_model", ["tiny", pytest.param("ViT-B-32", marks=pytest.mark.slow)])
def test_prompts_off_reproduces_open_clip_image_and_text(clip_model):
    model = _plain(SpLIPConfig(clip_model=clip_model, pretrained=""))
    size = model.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.encode(images, "photo")
        ref = F.normalize(model.clip.encode_image(images), dim=-1)
        ids = model.tokenizer(["a photo of a dog", "sketch of a cat", "x"])
        ours_text = model.encode_text(ids)
        ref_text = F.normalize(model.clip.encode_text(ids), dim=-1)
    assert (ours - ref).abs().max() <= PARITY_ATOL
    assert (ours_text - ref_text).abs().max() <= PARITY_ATOL


def test_text_pass_cut_at_eot_keeps_hidden_states(tiny_model):
    clip = tiny_model.clip
    ids = tiny_model.tokenizer(["sketch of a"])  # (1, 77)
    length = int(ids.argmax()) + 1
    full = clip.token_embedding(ids) + clip.positional_embedding  # (1, 77, Dt)
    cut = full[:, :length]
    with torch.no_grad():
        for block in clip.transformer.resblocks:
            full = block_forward(block, full, causal=True)
            cut = block_forward(block, cut, causal=True)
            assert torch.allclose(full[:, :length], cut, atol=1e-6)


def test_encode_is_unit_norm_and_depends_on_modality(tiny_model, tiny_images):
    with torch.no_grad():
        sketch = tiny_model.encode(tiny_images, "sketch")
        photo = tiny_model.encode(tiny_images, "photo")
    assert sketch.shape == (4, tiny_model.embed_dim)
    assert torch.allclose(sketch.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert (sketch - photo).abs().max() > 1e-4


def test_bad_modality_is_refused(tiny_model, tiny_images):
    with pytest.raises(SpLIPError, match="modality='drawing'"):
        tiny_model.encode(tiny_images, "drawing")


def test_gradients_reach_every_mapping_block_and_only_trainables_change(tiny_cfg, tiny_images):
    model = build_model(tiny_cfg).train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = (model.encode(tiny_images, "sketch") * model.encode(tiny_images.flip(0), "photo")).sum()
    loss.backward()
    for block in (model.text_prompter, model.template_prompter, model.layer_prompter):
        for name, p in block.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"frozen tensor {name} changed"
    assert not model.clip.training, "the frozen CLIP must stay in eval mode"


def test_trainable_parameters_are_mapping_blocks_and_layernorms(tiny_model):
    names = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert all(n.split(".")[0] in {"text_prompter", "template_prompter", "layer_prompter"}
               or ".ln_" in n or n.startswith("clip.ln_") for n in names)
    counts = tiny_model.parameter_counts()
    print(f"tiny SpLIP parameters: {counts}")
    assert 0 < counts["trainable"] < 0.05 * counts["total"]


def test_layernorms_frozen_without_train_layernorm(tiny_cfg):
    model = build_model(dataclasses.replace(tiny_cfg, train_layernorm=False))
    assert not any(p.requires_grad for p in model.clip.parameters())


def test_classes_context_runs_and_differs_from_template(tiny_cfg, tiny_images):
    classes = ("cat", "dog", "air plane")
    template = build_model(dataclasses.replace(tiny_cfg, seen_classes=classes)).eval()
    per_class = build_model(dataclasses.replace(tiny_cfg, vt_context="classes", seen_classes=classes)).eval()
    with torch.no_grad():
        a = template.encode(tiny_images, "sketch")
        b = per_class.encode(tiny_images, "sketch")
    assert torch.allclose(b.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert (a - b).abs().max() > 1e-5


def test_classes_context_equals_mean_of_single_class_passes(tiny_cfg, tiny_images):
    """Padding classes of different lengths into one batch must not leak into the pooled states."""
    classes = ("cat", "hot air balloon")
    both = build_model(dataclasses.replace(tiny_cfg, vt_context="classes", seen_classes=classes)).eval()
    with torch.no_grad():
        prompts = both.text_prompter(both.patch_embeddings(tiny_images))
        pooled = both.prompted_text_states(prompts, "photo")
        singles = []
        for name in classes:
            one = build_model(dataclasses.replace(tiny_cfg, vt_context="classes", seen_classes=(name,))).eval()
            one.load_state_dict(both.state_dict())
            singles.append(one.prompted_text_states(prompts, "photo"))
    for layer, state in enumerate(pooled):
        expected = (singles[0][layer] + singles[1][layer]) / 2
        assert torch.allclose(state, expected, atol=1e-5)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="vt_context"):
        SpLIPConfig(vt_context="everything")
    with pytest.raises(ValueError, match="seen_classes"):
        SpLIPConfig(vt_context="classes")
    with pytest.raises(SpLIPError, match="prompt_depth"):
        build_model(SpLIPConfig(clip_model="tiny", pretrained="", prompt_depth=5))


def test_config_json_round_trip(tmp_path):
    cfg = SpLIPConfig(clip_model="tiny", pretrained="", seen_classes=("a", "b"), alpha=0.3)
    cfg.save(tmp_path / "c.json")
    assert SpLIPConfig.load(tmp_path / "c.json") == cfg
