"""An ablated model (a mapping block switched off) round-trips through its checkpoint, exports with
its image-independent prompts baked, passes the parity gate and loads in the ONNX Runtime engine."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from splip_engine import build_model, load_checkpoint, save_checkpoint

ABLATIONS = {
    "without B_t": {"use_b_t": False},  # V_ms,l baked as constants: no text pass left in the graph
    "without any prompt module": pytest.param({"use_b_t": False, "use_b_v": False, "use_b_vt": False},
                                              marks=pytest.mark.slow),
    "without B_v": pytest.param({"use_b_v": False}, marks=pytest.mark.slow),
    "without B_vt": pytest.param({"use_b_vt": False}, marks=pytest.mark.slow),
}


def _perturbed(model):
    with torch.no_grad():  # trained-looking weights, so a missing or stale tensor would show
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("switches", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_ablated_model_checkpoint_export_parity_and_engine(tiny_cfg, tiny_images, tmp_path, switches):
    from splip_engine.export import export_engines
    from splip_engine.export.graph import expected_attention_count
    from splip_engine.runtime import load_engine

    torch.manual_seed(0)
    model = _perturbed(build_model(dataclasses.replace(tiny_cfg, **switches)))
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt")).eval()
    with torch.no_grad():
        for modality in ("sketch", "photo"):
            assert torch.equal(model.encode(tiny_images, modality), loaded.encode(tiny_images, modality))

    report = export_engines(loaded, tmp_path / "engines")
    assert report, report.errors  # the gate compares every graph with PyTorch before writing it
    text_pass = model.prompt_depth if "B_t" in model.cfg.mapping_blocks else 0  # else baked (no B_t) or absent
    assert expected_attention_count(model) == len(model.clip.visual.transformer.resblocks) + text_pass
    encoder = load_engine(tmp_path / "engines", backend="onnxruntime")
    assert {k: encoder.manifest["model_config"][k] for k in switches} == switches
    pixels = tiny_images.numpy()
    for modality in ("sketch", "photo"):
        with torch.no_grad():
            expected = model.encode(tiny_images, modality).numpy()
        # fp32 graph vs eager: float32 rounding only (same bound as the export gate, 1e-4)
        np.testing.assert_allclose(encoder.embed_pixels(pixels, modality), expected, atol=1e-4)
