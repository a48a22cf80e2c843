"""The pip extras never pair the two ONNX Runtime packages: `onnxruntime` and `onnxruntime-gpu`
install into one `onnxruntime/` directory, and with both present the CUDA provider disappears
(microsoft/onnxruntime#26996). Checked on pyproject.toml's extras, on every install command the
docs and CI give, and on this environment."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
ORT = {"onnxruntime", "onnxruntime-gpu"}
DOCUMENTED = ("README.md", ".ci/setup", "benchmarks/RESULTS.md")
INSTALL = re.compile(r"""pip install[^\n]*?(?:splip-engine|["' ]\.)\[([A-Za-z0-9_,\- ]+)\]""")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def resolve(extras: list[str]) -> set[str]:
    """Distribution names (lower case) that `pip install splip-engine[extras]` asks for, the
    extras' references to splip-engine itself expanded."""
    project = _project()
    names = {Requirement(r).name.lower() for r in project["dependencies"]}
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name.lower() == project["name"]:
                pending += sorted(requirement.extras)
            else:
                names.add(requirement.name.lower())
    return names


def documented_installs() -> list[tuple[str, list[str]]]:
    """(where, extras) of every `pip install ...splip-engine[...]` / `pip install -e ".[...]"`."""
    found = []
    for name in DOCUMENTED:
        for match in INSTALL.finditer((REPO / name).read_text()):
            found.append((name, [e.strip() for e in match.group(1).split(",")]))
    return found


def test_only_cpu_and_gpu_bring_onnxruntime_one_package_each():
    extras = _project()["optional-dependencies"]
    assert not resolve([]) & ORT  # the base install has neither
    bringing = {extra: resolve([extra]) & ORT for extra in extras if resolve([extra]) & ORT}
    assert bringing == {"cpu": {"onnxruntime"}, "gpu": {"onnxruntime-gpu"}}


def test_no_documented_install_pairs_the_two_packages():
    installs = documented_installs()
    assert ("README.md", ["gpu"]) in installs and (".ci/setup", ["dev", "cpu", "serve", "distributed"]) in installs
    for where, extras in installs:
        assert len(resolve(extras) & ORT) <= 1, f"{where}: pip install [{','.join(extras)}] pulls both {ORT}"
    assert resolve(["dev", "cpu", "serve", "distributed"]) >= {"onnxruntime", "pytest"}  # CI still gets ORT


def test_this_environment_has_one_onnxruntime_package():
    installed = set()
    for name in ORT:
        try:
            metadata.version(name)
            installed.add(name)
        except metadata.PackageNotFoundError:
            pass
    if not installed:
        pytest.skip("no onnxruntime package here")
    assert len(installed) == 1, f"both {sorted(installed)} are installed: ONNX Runtime has lost its CUDA provider"
