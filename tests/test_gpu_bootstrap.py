"""benchmarks/gpu_bootstrap.py, rehearsed here as the GPU machine runs it: a wheel directory (the
project's own wheel, built for this Python) installed with no network into a target dir, from
which splip_engine, splip_engine.export and splip_engine.kernels import (the working tree's
splip_engine/ has no export/ or kernels/ inside it), and the suite started through it."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bootstrap.py"
NO_NETWORK = {"PIP_NO_INDEX": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
"""pip told not to use an index, and any connection sent to a closed local port."""


@pytest.fixture(scope="module")
def bootstrap():
    spec = importlib.util.spec_from_file_location("gpu_bootstrap", BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheels(bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp("carry")
    bootstrap.build_project_wheel(directory)
    return directory


def _bootstrap(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **NO_NETWORK}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, str(BOOTSTRAP), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


@pytest.mark.slow  # a wheel build, a pip install and a suite start in subprocesses: ~40 s on 2 cores
def test_the_bootstrap_installs_a_local_wheel_dir_offline_and_starts_the_suite_from_it(wheels, tmp_path):
    assert [w.name.split("-")[0] for w in wheels.glob("*.whl")] == ["splip_engine"]
    target = tmp_path / "site"
    done = _bootstrap("install", "--wheels", str(wheels), "--target", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed 1 wheels" in done.stdout
    assert (target / "splip_engine" / "export" / "tensorrt.py").is_file()  # package-dir mapped by the wheel
    assert (target / "splip_engine" / "kernels" / "similarity.py").is_file()
    out = tmp_path / "suite.json"
    done = _bootstrap("run", "--wheels", str(wheels), "--target", str(target), "--", "--dry-run", "--only",
                      "environment", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for module in ("splip_engine", "splip_engine.export", "splip_engine.kernels"):
        assert f"gpu_bootstrap: import {module}: {target}" in done.stdout  # from the target, not the work tree
    results = json.loads(out.read_text())
    assert results["meta"]["splip_engine_file"].startswith(str(target))  # the suite ran on the installed wheel
    assert [s["status"] for s in results["stages"]][0] == "ok"


def test_an_empty_wheel_dir_is_a_clear_error(tmp_path):
    done = _bootstrap("install", "--wheels", str(tmp_path), "--target", str(tmp_path / "site"), cwd=tmp_path)
    assert done.returncode == 1 and "no wheels in" in done.stderr and "gpu_bootstrap.py prepare" in done.stderr


def test_help_has_examples(bootstrap, capsys):
    for command in ([], ["prepare"], ["run"], ["install"]):
        with pytest.raises(SystemExit) as exit_info:
            bootstrap.main([*command, "--help"])
        assert exit_info.value.code == 0 and "gpu_bootstrap.py" in capsys.readouterr().out
