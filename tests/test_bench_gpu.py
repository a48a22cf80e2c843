"""`splip-engine bench --gpu`: the CUDA table's engines, and a clear refusal without a GPU."""
from __future__ import annotations

import torch
from click.testing import CliRunner

from splip_engine.bench import TORCH_CUDA_ENGINES, BenchConfig, torch_engine_variants
from splip_engine.cli import main


def test_the_gpu_table_lists_every_torch_cuda_variant_on_cuda():
    cfg = BenchConfig.gpu()
    assert cfg.engines[:len(TORCH_CUDA_ENGINES)] == TORCH_CUDA_ENGINES and cfg.batches == (1, 64, 256)
    variants = torch_engine_variants()
    assert {variants[name][0] for name in TORCH_CUDA_ENGINES} == {"cuda"}
    assert variants["torch_cuda_fp16_compiled_graphs"][1].compile and variants["torch_cuda_bf16"][1].precision == "bf16"


def test_bench_gpu_without_a_gpu_is_one_line_and_exit_code_2(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["bench", "--gpu"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --gpu needs a CUDA GPU and none is visible; run `splip-engine bench "
                                     "--quick` on CPU")
