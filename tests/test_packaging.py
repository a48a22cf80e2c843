"""The wheel works outside the repo: export/ and kernels/ are inside it, the splits ship, the CLI runs."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_bootstrap", REPO / "benchmarks" / "gpu_bootstrap.py")
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    wheel = bootstrap.build_project_wheel(tmp_path / "dist")  # built from a copy: no build/ left in the repo
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = ("import splip_engine, splip_engine.export, splip_engine.kernels, splip_engine.data.splits as s;"
             "print(splip_engine.__file__); print(sorted(s.SPLITS))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[0].startswith(str(tmp_path / "site"))
    assert "sketchy25" in out
    info = subprocess.run([sys.executable, "-m", "splip_engine", "info"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True).stdout
    assert "onnxruntime" in info and "torch" in info
    assert (tmp_path / "site" / "bin" / "splip-engine").is_file()
