"""benchmarks/gpu_suite.py runs its whole code path on CPU (--dry-run), reports every part, and
leaves the process environment as it found it; it writes its results after every stage, turns
failures into rows and goes on, and keeps to --only / --budget-s (rehearsed in a subprocess with
a dependency made unavailable)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import triton

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
        assert os.environ["TRITON_INTERPRET"] == "1" and triton.knobs.runtime.interpret
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
    assert not triton.knobs.runtime.interpret
    results = json.loads(out.read_text())
    assert results["all_checks_ok"] and results["meta"]["interpreter"]
    assert [(s["stage"], s["status"]) for s in results["stages"]] == [(name, "ok") for name in gpu_suite.STAGES]
    assert results["failed_rows"] == 0 and results["meta"]["packages"]["torch"] != "missing"
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
    shards = gpu_suite.write_tar_shards(tmp_path, 5, (16, 12), per_shard=2, workers=3)
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    names = []
    for shard in shards:
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                assert archive.extractfile(member).read()[:3] == b"\xff\xd8\xff"
                names.append(member.name)
    assert names == [f"{i:08d}.jpg" for i in range(5)]


def test_a_wrong_kernel_fails_its_checks(gpu_suite, monkeypatch, tmp_path):
    import splip_engine.kernels

    def wrong(q, k, v, causal=False):
        return splip_engine.kernels.attention_reference(q, k, v, causal) + 1

    monkeypatch.setattr(splip_engine.kernels, "fused_attention", wrong)
    suite = gpu_suite.Suite(gpu_suite.DRY_SIZES, gpu_suite.torch.device("cpu"), 1, tmp_path, tmp_path / "r.json", None)
    gpu_suite.check_attention(suite)
    rows = suite.results["checks"]
    checked = [r for r in rows if "skipped" not in r]
    assert checked and all(r["ok"] is False for r in checked)  # checked and failed, not crashed
    assert {r["dtype"] for r in rows if "skipped" in r} == {"bfloat16"}


def test_help_works_without_a_gpu(gpu_suite, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(["--help"])
    assert exit_info.value.code == 0 and "--dry-run" in capsys.readouterr().out


def test_results_are_written_after_each_stage_and_a_failure_is_a_row(gpu_suite, monkeypatch, tmp_path, capsys):
    out = tmp_path / "suite.json"
    seen = []

    def first(suite):
        suite.add("kernels", {"part": "p", "case": "c", "variant": "first", "ms": 1.0})

    def broken(suite):
        seen.append(json.loads(out.read_text()))  # what a call killed here would leave
        with suite.guard("encoder", {"part": "encoder", "case": "batch 1", "variant": "v"}):
            raise MemoryError("out of memory on the device")
        suite.add("encoder", {"part": "encoder", "case": "batch 2", "variant": "v", "ms": 2.0})  # goes on
        raise RuntimeError("CUDA provider did not load\nsecond line")

    def last(suite):
        seen.append(json.loads(out.read_text()))

    functions = dict.fromkeys(gpu_suite.STAGES, last) | {"environment": first, "kernel_checks": broken}
    monkeypatch.setattr(gpu_suite, "STAGE_FUNCTIONS", functions)
    suite = gpu_suite.Suite(gpu_suite.DRY_SIZES, gpu_suite.torch.device("cpu"), 1, tmp_path, out, None)
    suite.run(gpu_suite.STAGES, gpu_suite.STAGES)
    assert [s["status"] for s in seen[0]["stages"]] == ["ok", "running"] and seen[0]["kernels"][0]["variant"] == "first"
    assert seen[1]["stages"][1]["status"] == "failed: RuntimeError: CUDA provider did not load"
    assert len(seen) == 1 + len(gpu_suite.STAGES) - 2  # every later stage still ran
    failed, timed = suite.results["encoder"]
    assert failed["failed"] == "MemoryError: out of memory on the device" and timed["ms"] == 2.0
    assert not suite.ok() and suite.results["failed_stages"] == ["kernel_checks"]
    markdown = out.with_suffix(".md").read_text()
    assert "| kernel_checks | failed: RuntimeError: CUDA provider did not load |" in markdown
    assert "| encoder | batch 1 | v | failed: MemoryError: out of memory on the device |" in markdown
    assert "FAILED encoder: batch 1 v: MemoryError" in capsys.readouterr().out  # flushed progress line


def test_only_and_the_budget_skip_stages_with_a_row_saying_why(gpu_suite, monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(gpu_suite, "STAGE_FUNCTIONS", {name: ran.append for name in gpu_suite.STAGES})
    suite = gpu_suite.Suite(gpu_suite.DRY_SIZES, gpu_suite.torch.device("cpu"), 1, tmp_path, tmp_path / "r.json",
                            budget_s=5)
    suite.run(gpu_suite.STAGES, ("environment", "encoder", "search"))
    status = {s["stage"]: s["status"] for s in suite.results["stages"]}
    assert status["environment"] == status["search"] == "ok" and len(ran) == 2
    assert status["encoder"].startswith("skipped: budget (estimate 90 s > ")
    assert status["kernel_checks"] == status["embed_job"] == status["kernel_timings"] == "skipped: not in --only"
    assert suite.ok()  # skipping is not failing


def test_an_unknown_stage_is_refused_with_the_list(gpu_suite, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(["--dry-run", "--only", "encoder,warp_drive"])
    assert exit_info.value.code == 2 and "unknown stage(s) ['warp_drive']: choose from environment," in \
        capsys.readouterr().err


def test_rehearsal_a_missing_dependency_and_a_one_second_budget_leave_partial_results(tmp_path):
    """The suite as the GPU machine runs it (a subprocess, its exit code, its files), with faiss
    made unavailable (a `faiss` that fails to import, first on PYTHONPATH) and a 1 s budget."""
    blocker = tmp_path / "blocked" / "faiss"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('faiss made unavailable by the rehearsal')\n")
    out = tmp_path / "partial.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--out", str(out), "--budget-s", "1",
                           "--only", "environment,encoder,search"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # something failed
    results = json.loads(out.read_text())
    status = {s["stage"]: s["status"] for s in results["stages"]}
    assert status["environment"] == "ok" and results["meta"]["packages"]["torch"] != "missing"  # finished: present
    assert status["search"].startswith("failed: SpLIPError: ") and "faiss" in status["search"]  # the failed one, named
    assert status["encoder"].startswith("skipped: budget")  # estimate over what was left
    assert status["kernel_checks"] == status["embed_job"] == status["kernel_timings"] == "skipped: not in --only"
    assert "| search | failed: SpLIPError:" in out.with_suffix(".md").read_text()
    assert "stage search: failed" in done.stdout  # the progress lines say where it was
