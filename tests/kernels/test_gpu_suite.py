"""benchmarks/gpu_suite.py runs its whole code path on CPU (--dry-run), reports every part, and
leaves the process environment as it found it."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import tarfile
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


@pytest.mark.parametrize("before", [None, "0", "1"])
def test_the_interpreter_switch_is_restored_whatever_it_was(gpu_suite, monkeypatch, before):
    if before is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", before)
    monkeypatch.setenv("SPLIP_KEPT", "yes")
    with pytest.raises(RuntimeError, match="inside"), gpu_suite.interpreter_environment(True):
        assert os.environ["TRITON_INTERPRET"] == "1" and gpu_suite.triton.knobs.runtime.interpret
        os.environ["SPLIP_SET_INSIDE"] = "1"  # as libraries do on first use
        os.environ["SPLIP_KEPT"] = "changed"
        raise RuntimeError("inside")  # restored on an error too
    assert os.environ.get("TRITON_INTERPRET") == before
    assert "SPLIP_SET_INSIDE" not in os.environ and os.environ["SPLIP_KEPT"] == "yes"


@pytest.mark.slow  # the whole dry run: ~75 s on 2 cores
def test_dry_run_checks_times_writes_every_part_and_restores_the_environment(gpu_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the conftest sets it for kernel tests on CPU
    environment = dict(os.environ)
    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--dry-run", "--out", str(out), "--repeats", "1"]) == 0
    assert dict(os.environ) == environment  # TRITON_INTERPRET is not left behind (nor anything else)
    assert not gpu_suite.triton.knobs.runtime.interpret
    results = json.loads(out.read_text())
    assert results["all_checks_ok"] and results["meta"]["interpreter"]
    checked = {c["kernel"] for c in results["checks"] if "skipped" not in c}
    assert checked == {"fused_attention", "similarity_topk", "encoder vs eager fp32"}
    assert {r["variant"] for r in results["kernels"]} == {
        "triton fused_attention", "torch SDPA", "triton similarity_topk", "torch matmul + topk"
    }
    timed = {r["variant"] for r in results["encoder"] if "skipped" not in r}
    assert timed == {"torch eager fp32", "torch fp16", "torch bf16", "torch fp16 + CUDA graphs (dry run: without CUDA "
                     "graphs)", "torch fp16 + Triton attention + CUDA graphs (dry run: without CUDA graphs)"}
    skipped = {r["variant"]: r["skipped"] for r in results["encoder"] if "skipped" in r}
    assert set(skipped) == {"torch fp16 + compile + CUDA graphs", "onnxruntime CUDA fp16", "TensorRT fp16"}
    encoder_rows = [r for r in results["encoder"] if "skipped" not in r]
    assert all(r["img_s"] == pytest.approx(2 / r["ms"] * 1e3) and r["p99_ms"] >= r["p50_ms"] for r in encoder_rows)
    (job,) = results["embed_job"]
    assert job["embedded"] == 12 and job["job_vs_bare"] == pytest.approx(job["job_img_s"] / job["bare_encoder_img_s"])
    gpu, cpu = results["search"]
    assert cpu["max_score_diff_vs_gpu"] < 1e-3 and cpu["gpu_speedup"] == pytest.approx(cpu["ms"] / gpu["ms"])
    markdown = out.with_suffix(".md").read_text()
    assert "| encoder tiny sketch | batch 2 | torch bf16 |" in markdown and markdown in capsys.readouterr().out


def test_tar_shards_hold_every_jpeg_once(gpu_suite, tmp_path):
    shards = gpu_suite.write_tar_shards(tmp_path, 5, (16, 12), per_shard=2)
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    names = []
    for shard in shards:
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                assert archive.extractfile(member).read()[:3] == b"\xff\xd8\xff"
                names.append(member.name)
    assert names == [f"{i:08d}.jpg" for i in range(5)]


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
