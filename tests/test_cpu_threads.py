"""CPU thread choice: one intra-op thread for the tiny model, a core per thread (minus workers)
for ViT-B, the user's OMP_NUM_THREADS first; the scope restores the previous count."""
from __future__ import annotations

import torch

from splip_engine.cpu_threads import available_cores, intra_op_threads, torch_threads, vision_macs


def test_small_models_get_one_thread_large_ones_the_free_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert vision_macs("tiny") == 2 * 17 * 12 * 64 ** 2  # 2 layers, 16 patches + CLS, width 64
    assert vision_macs("ViT-B-32") == 12 * 50 * 12 * 768 ** 2
    assert intra_op_threads("tiny") == 1
    assert intra_op_threads("ViT-B-32", workers=0) == available_cores()
    assert intra_op_threads("ViT-B-32", workers=available_cores() + 3) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert intra_op_threads("tiny") == 3


def test_torch_threads_scope_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
