"""The README's main command, `splip-engine demo`, runs the whole pipeline and writes its report."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_command_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    # fewer pre-training steps and epochs than the default: this checks the plumbing, not the numbers
    proc = subprocess.run([sys.executable, "-m", "splip_engine", "demo", "--out", str(out), "--epochs", "2",
                           "--pretrain-steps", "60"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Zero-shot SBIR on the unseen classes" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["metrics"]) == {"CLIP, no prompts (torch)", "SpLIP untrained (torch)",
                                      "SpLIP trained (onnxruntime, fp16)"}
    for by_mode in report["metrics"].values():
        assert set(by_mode) == {"zs", "gzs", "fg"} and 0 <= by_mode["zs"]["map_all"] <= 1
    assert (out / "engines" / "manifest.json").is_file() and (out / "index").is_dir()
    page = (out / "results.html").read_text()
    n_queries = len(json.loads((out / "search.json").read_text()))
    assert n_queries >= 4 and page.count("<img") == n_queries * 11  # each query sketch beside its top-10
    rerun = subprocess.run([sys.executable, "-m", "splip_engine", "demo", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode != 0 and "is not empty" in rerun.stderr and "Traceback" not in rerun.stderr
