"""`splip-engine diagnose` / splip_engine.diagnose: the spread of B_t's prompts T, the change of the
text pass and of B_vt's prompts when T is replaced by a constant, and per-block gradient norms."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from splip_engine import SpLIPConfig, build_model, save_checkpoint
from splip_engine.cli import main
from splip_engine.diagnose import diagnose, fixed_text_prompts, rel_spread
from splip_engine.train import TrainConfig


def _train_cfg(mini) -> TrainConfig:
    return TrainConfig(sketch_root=str(mini.sketch_root), photo_root=str(mini.photo_root), split=str(mini.unseen_file),
                       val_fraction=0.2)


def test_rel_spread_is_mean_distance_to_the_mean_over_its_norm():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0), distances 1 and 1
    assert rel_spread(x) == pytest.approx(0.5)
    assert rel_spread(torch.ones(5, 3, 4)) == 0.0


def test_fixed_prompts_change_the_embedding_and_are_undone():
    model = build_model(SpLIPConfig(clip_model="tiny", pretrained="")).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model.encode(images, "sketch")
        t = model.text_prompter(model.patch_embeddings(images))
        with fixed_text_prompts(model, {"sketch": 5 + t[:1], "photo": t[:1]}):
            fixed = model.encode(images, "sketch")
        with fixed_text_prompts(model, {"sketch": t[:1], "photo": t[:1]}):
            first = model.encode(images[:1], "sketch")
        after = model.encode(images, "sketch")
    assert torch.equal(before, after) and "visual_prompts" not in vars(model)
    assert (before - fixed).abs().max() > 1e-3
    assert torch.allclose(first, before[:1], atol=1e-6)  # image 0 with its own T is unchanged


def test_diagnose_measures_a_constant_t_as_constant_and_a_varying_one_as_varying(mini):
    model = build_model(SpLIPConfig(clip_model="tiny", pretrained="", beta=0.0))
    stats = diagnose(model, _train_cfg(mini), max_images=8, grad_batches=1, batch_size=4, evaluate=False)
    assert stats["rel_spread"]["all"]["T"] > 1e-3 and stats["n_images"] == {"sketch": 8, "photo": 8}
    changes = stats["replaced_by"]["data-set mean"]["photo"]
    assert min(changes["W_l"]) > 1e-4 and min(changes["V_ms_l"]) > 1e-4
    grads = stats["gradient_norms"]
    assert grads["batches"] == 1 and all(grads[k] > 0 for k in ("B_t", "B_v", "B_vt", "LayerNorms (vision)",
                                                                "T (per image)"))

    with torch.no_grad():  # B_t's output layer ignores its input: T is its bias, the same for every image
        model.text_prompter.mlp[2].weight.zero_()
        model.text_prompter.mlp[2].bias.normal_()
    constant = diagnose(model, _train_cfg(mini), max_images=8, grad_batches=1, batch_size=4, evaluate=True)
    assert constant["rel_spread"]["all"]["T"] == 0.0
    for kind in ("data-set mean", "modality mean"):
        for modality in ("sketch", "photo"):
            c = constant["replaced_by"][kind][modality]
            assert max(c["W_l"]) < 1e-5 and max(c["V_ms_l"]) < 1e-5 and c["embedding_mean_cos"] == pytest.approx(1)
    scores = constant["retrieval"]
    assert scores["T per image"] == scores["T = data-set mean"] == scores["T = modality mean"]


def test_cli_diagnose_writes_json_and_refuses_a_model_without_b_t(mini, tmp_path):
    runner = CliRunner()
    assert "Example:" in runner.invoke(main, ["diagnose", "--help"]).output
    cfg = SpLIPConfig(clip_model="tiny", pretrained="", beta=0.0)
    save_checkpoint(build_model(cfg), tmp_path / "ckpt")
    result = runner.invoke(main, ["diagnose", "--model", str(tmp_path / "ckpt"), "--data-root", str(mini.root),
                                  "--max-images", "4", "--grad-batches", "1", "--batch-size", "4", "--no-eval",
                                  "--out", str(tmp_path / "d.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "d.json").read_text())
    assert "T" in saved["rel_spread"]["sketch"] and "retrieval" not in saved and "B_t" in result.output
    save_checkpoint(build_model(dataclasses.replace(cfg, use_b_t=False)), tmp_path / "no_bt")
    refused = runner.invoke(main, ["diagnose", "--model", str(tmp_path / "no_bt"), "--data-root", str(mini.root)])
    assert refused.exit_code == 2 and "has no B_t" in refused.output and "Traceback" not in refused.output
