"""benchmarks/gpu_suite.py runs its whole code path on CPU (--dry-run) and reports every part."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def gpu_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_suite"]


@pytest.mark.slow
def test_dry_run_checks_times_and_writes_every_part(gpu_suite, tmp_path, capsys):
    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--dry-run", "--out", str(out), "--repeats", "1"]) == 0
    results = json.loads(out.read_text())
    assert results["all_checks_ok"] and results["meta"]["interpreter"]
    checked = {c["kernel"] for c in results["checks"] if "skipped" not in c}
    assert checked == {"fused_attention", "similarity_topk", "encoder vs eager fp32"}
    assert {r["variant"] for r in results["kernels"]} == {
        "triton fused_attention", "torch SDPA", "triton similarity_topk", "torch matmul + topk"
    }
    timed = {r["variant"] for r in results["encoder"] if "skipped" not in r}
    assert timed == {"eager fp32", "fp16", "fp16 + triton"}  # CUDA graphs are skipped on CPU
    assert all(r["ms"] > 0 and r["img_s"] > 0 for r in results["encoder"] if "skipped" not in r)
    assert "| encoder tiny sketch | batch 2 | fp16 + triton |" in capsys.readouterr().out


def test_a_wrong_kernel_fails_its_checks(gpu_suite, monkeypatch):
    def wrong(q, k, v, causal=False):
        return gpu_suite.attention_reference(q, k, v, causal) + 1

    monkeypatch.setattr(gpu_suite, "fused_attention", wrong)
    rows = gpu_suite.check_attention(gpu_suite.DRY_SIZES, gpu_suite.torch.device("cpu"), interpreting=True)
    checked = [r for r in rows if "skipped" not in r]
    assert checked and not any(r["ok"] for r in checked)
    assert {r["dtype"] for r in rows if "skipped" in r} == {"bfloat16"}


def test_help_works_without_a_gpu(gpu_suite, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(["--help"])
    assert exit_info.value.code == 0 and "--dry-run" in capsys.readouterr().out
