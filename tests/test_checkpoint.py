"""Checkpoints round-trip exactly; pretrained weights load from a local file or fail clearly."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from splip_engine import SpLIPConfig, SpLIPError, build_model, load_checkpoint, save_checkpoint
from splip_engine.checkpoint import WEIGHTS_FILE


def _perturb_trainables(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))


def test_round_trip_gives_identical_embeddings(tiny_cfg, tiny_images, tmp_path):
    model = build_model(tiny_cfg).eval()
    _perturb_trainables(model)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    with torch.no_grad():
        for modality in ("sketch", "photo"):
            assert torch.equal(model.encode(tiny_images, modality), loaded.encode(tiny_images, modality))


def test_random_backbone_is_stored_but_pretrained_backbone_is_not(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    save_checkpoint(model, tmp_path / "random")
    clip_file = tmp_path / "tiny_clip.pt"
    torch.save(model.clip.state_dict(), clip_file)
    pretrained = build_model(dataclasses.replace(tiny_cfg, pretrained=str(clip_file)))
    save_checkpoint(pretrained, tmp_path / "pre")
    size_random = (tmp_path / "random" / WEIGHTS_FILE).stat().st_size
    size_pre = (tmp_path / "pre" / WEIGHTS_FILE).stat().st_size
    assert size_pre < size_random / 10
    assert load_checkpoint(tmp_path / "pre").cfg.pretrained == str(clip_file)


def test_checkpoint_into_other_backbone_fails_clearly(tiny_cfg, tmp_path, monkeypatch):
    save_checkpoint(build_model(tiny_cfg), tmp_path / "ckpt")
    other = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
             "patch_size": 8}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
             "layers": 2}}
    (tmp_path / "tiny-narrow.json").write_text(json.dumps(other))
    import open_clip

    open_clip.add_model_config(tmp_path / "tiny-narrow.json")
    with pytest.raises(SpLIPError, match="does not fit a tiny-narrow SpLIP model.*different backbone"):
        load_checkpoint(tmp_path / "ckpt", clip_model="tiny-narrow")


def test_missing_or_damaged_checkpoint_is_refused(tiny_cfg, tmp_path):
    with pytest.raises(SpLIPError, match="is not a SpLIP checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(build_model(tiny_cfg), tmp_path / "ckpt")
    (tmp_path / "ckpt" / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(SpLIPError, match="damaged"):
        load_checkpoint(tmp_path / "ckpt")


def test_local_pretrained_file_is_loaded(tiny_cfg, tmp_path, tiny_images):
    source = build_model(dataclasses.replace(tiny_cfg, seed=123))
    clip_file = tmp_path / "weights.pt"
    torch.save(source.clip.state_dict(), clip_file)
    model = build_model(dataclasses.replace(tiny_cfg, pretrained=str(clip_file)))
    for name, tensor in source.clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], tensor), name


def test_missing_pretrained_file_and_unknown_tag_fail_clearly(tiny_cfg, tmp_path):
    with pytest.raises(SpLIPError, match="pretrained weights file not found"):
        build_model(dataclasses.replace(tiny_cfg, pretrained=str(tmp_path / "none.pt")))
    with pytest.raises(SpLIPError, match="neither a file nor a known tag"):
        build_model(dataclasses.replace(tiny_cfg, pretrained="openai"))


def test_unreachable_hub_fails_fast_with_the_local_file_hint(monkeypatch, tmp_path):
    """Offline, the weights are looked up once and the failure is one clear error: no retry loop
    (open_clip / huggingface_hub would retry the download several times before giving up)."""
    import socket

    monkeypatch.setenv("HF_ENDPOINT", "https://unreachable.invalid")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def counting_getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting_getaddrinfo)
    with pytest.raises(SpLIPError, match="could not download the ViT-B-32 weights.*--pretrained /path/to"):
        build_model(SpLIPConfig(clip_model="ViT-B-32", pretrained="openai"))
    assert lookups == ["unreachable.invalid"]


def test_unknown_clip_model_lists_valid_names():
    with pytest.raises(SpLIPError, match="unknown clip_model 'ViT-Z-99'.*tiny"):
        build_model(SpLIPConfig(clip_model="ViT-Z-99", pretrained=""))
