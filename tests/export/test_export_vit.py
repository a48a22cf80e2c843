"""ViT-B-32 (random weights): one tower exported at full size, fused per layer, within the fp32 and fp16 gates."""
from __future__ import annotations

from pathlib import Path

import pytest

from splip_engine import SpLIPConfig, build_model
from splip_engine.export import parity
from splip_engine.export.exporter import ExportReport, export_checked_tower
from splip_engine.export.graph import expected_attention_count


@pytest.mark.slow  # traces a ViT-B/32 + 12-layer text tower and runs 3 x 40 probe images: ~30-60 s
def test_vit_b32_sketch_tower_is_fused_and_within_the_fp32_and_fp16_gates():
    model = build_model(SpLIPConfig(clip_model="ViT-B-32", pretrained="")).eval()
    report = ExportReport(out_dir=Path("unused"), precision="fp16")
    probe = parity.probe_images(model.image_size)
    reference = parity.embed_batched(parity.torch_embedder(model, "sketch"), probe)
    export_checked_tower(model, "sketch", opset=23, precision="fp16", bounds=parity.resolve_thresholds("fp16"),
                         probe=probe, reference=reference, allow_unfused=False, report=report)
    assert report, report.errors
    assert expected_attention_count(model) == 24  # 12 vision + 12 prompted text layers
    assert report.fused_attention["sketch"]["count"] == 24
    sketch = report.parity["sketch"]
    assert sketch["fp32_graph"]["max_abs_diff"] <= 1e-4 and sketch["fp32_graph"]["passed"]
    assert sketch["min_cosine"] >= 0.999 and sketch["top10_agreement"] == 1.0
