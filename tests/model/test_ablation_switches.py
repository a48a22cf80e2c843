"""The ablation switches (SpLIPConfig.use_b_t / use_b_v / use_b_vt): each removes its block, its
parameters and its effect on the embedding, and the rest of the model still works."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from splip_engine import SpLIPConfig, build_model

OFF = {"B_t": {"use_b_t": False}, "B_v": {"use_b_v": False}, "B_vt": {"use_b_vt": False},
       "all": {"use_b_t": False, "use_b_v": False, "use_b_vt": False}}
PREFIX = {"B_t": "text_prompter.", "B_v": "template_prompter.", "B_vt": "layer_prompter."}


def _model(tiny_cfg, **switches):
    return build_model(dataclasses.replace(tiny_cfg, **switches)).eval()


@pytest.mark.parametrize("off, absent", [("B_t", {"B_t"}), ("B_v", {"B_v"}), ("B_vt", {"B_vt", "B_t"}),
                                         ("all", {"B_t", "B_v", "B_vt"})])
def test_a_switched_off_block_has_no_parameters(tiny_cfg, off, absent):
    model = _model(tiny_cfg, **OFF[off])
    names = [n for n, _ in model.named_parameters()]
    for block in absent:  # without B_vt nothing reads B_t's prompts, so it is not built either
        assert not any(n.startswith(PREFIX[block]) for n in names), block
    for block in set(PREFIX) - absent:
        assert any(n.startswith(PREFIX[block]) for n in names), block
    assert set(model.cfg.mapping_blocks) == set(PREFIX) - absent


def _visual_tokens(model, images, modality="sketch") -> int:
    with torch.no_grad():
        return model.encode_with_tokens(images, modality)[1].shape[1]


def test_without_b_v_the_visual_sequence_loses_the_template_tokens(tiny_cfg, tiny_images):
    full, no_bv, no_bvt = _model(tiny_cfg), _model(tiny_cfg, use_b_v=False), _model(tiny_cfg, use_b_vt=False)
    template = len(full._template_ids_sketch)  # P_tg: [SOS] sketch of a
    n_patches = (32 // 8) ** 2
    assert _visual_tokens(full, tiny_images) == 1 + template + tiny_cfg.n_vt_prompts + n_patches
    assert _visual_tokens(no_bv, tiny_images) == 1 + tiny_cfg.n_vt_prompts + n_patches
    assert _visual_tokens(no_bvt, tiny_images) == 1 + template + n_patches


def test_without_b_t_the_layer_prompts_are_the_same_for_every_image(tiny_cfg, tiny_images):
    model = _model(tiny_cfg, use_b_t=False)
    full = _model(tiny_cfg)
    with torch.no_grad():
        patches = model.patch_embeddings(tiny_images)
        prompts = model.layer_prompts(patches, "sketch")  # depth x (1, n, Dv)
        conditioned = full.layer_prompts(full.patch_embeddings(tiny_images), "sketch")  # depth x (B, n, Dv)
    assert all(p.shape[0] == 1 for p in prompts)
    assert all((c[0] - c[1]).abs().max() > 1e-6 for c in conditioned)  # with B_t they differ per image
    assert set(model.constant_prompts("sketch")) == {"template_prompts", "layer_prompts"}
    assert set(full.constant_prompts("sketch")) == {"template_prompts"}


def test_without_b_vt_the_text_tower_does_not_touch_the_embedding(tiny_cfg, tiny_images):
    model = _model(tiny_cfg, use_b_vt=False)
    with torch.no_grad():
        before = model.encode(tiny_images, "sketch")
        for p in model.clip.transformer.parameters():  # the text tower's blocks
            p.add_(torch.randn_like(p))
        after = model.encode(tiny_images, "sketch")
    assert torch.equal(before, after)


def test_with_every_block_off_and_untrained_layernorms_the_model_is_plain_clip(tiny_cfg, tiny_images):
    model, plain = _model(tiny_cfg, **OFF["all"]), _model(tiny_cfg, prompts=False)
    with torch.no_grad():
        assert torch.allclose(model.encode(tiny_images, "sketch"), plain.encode(tiny_images, "sketch"), atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("clip.") for n in trainable)  # only the LayerNorms learn


def test_each_block_changes_the_embedding_it_feeds(tiny_cfg, tiny_images):
    """Perturbing a built block's last layer moves the embedding (so a missing block is a real change)."""
    for off in ("B_t", "B_v"):
        model = _model(tiny_cfg, **OFF[off])
        for name in set(model.cfg.mapping_blocks):
            block = getattr(model, PREFIX[name][:-1])
            with torch.no_grad():
                before = model.encode(tiny_images, "photo")
                for p in block.parameters():
                    p.add_(0.5 * torch.randn_like(p))
                assert (model.encode(tiny_images, "photo") - before).abs().max() > 1e-4, (off, name)


def test_switch_validation_and_json_round_trip(tmp_path):
    with pytest.raises(ValueError, match="vt_pool"):
        SpLIPConfig(vt_pool="learned", use_b_t=False)
    with pytest.raises(ValueError, match="triplet_weight=-1"):
        SpLIPConfig(triplet_weight=-1)
    with pytest.raises(ValueError, match="no loss left"):
        SpLIPConfig(triplet_weight=0, alpha=0, beta=0)
    cfg = SpLIPConfig(clip_model="tiny", pretrained="", use_b_t=False, use_b_v=False, triplet_weight=0.0)
    cfg.save(tmp_path / "c.json")
    assert SpLIPConfig.load(tmp_path / "c.json") == cfg
    assert cfg.mapping_blocks == ("B_vt",) and SpLIPConfig(prompts=False).mapping_blocks == ()
