"""The README's measured tables equal what benchmarks/readme_tables.py renders from their results
JSON, and none is stale: no file on a table's measured path changed since its JSON was written."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_tables"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_readme_table_is_what_its_json_renders(tables):
    readme = (ROOT / "README.md").read_text()
    for name, table in tables.TABLES.items():
        region = tables.readme_region(name, readme)
        assert region is not None, f"README.md lacks the <!-- table:{name} --> region"
        result = tables.load(name)
        assert region == table.render(result), (
            f"README.md's {name} table differs from benchmarks/results/{name}.json: "
            "run `python benchmarks/readme_tables.py --render`")
        assert {"commit", "machine", "command", "measured_at", "path_sha256"} <= set(result)
        assert result["machine"]["cpu"] and result["commit"][:10] in region


def test_no_readme_table_is_stale(tables):
    stale = {name: tables.stale_files(name, tables.load(name)) for name in tables.TABLES}
    assert not any(stale.values()), (
        "code on a README table's measured path changed since its JSON was measured (measure it again: "
        f"benchmarks/readme_tables.py --measure / --update): {stale}")


def _copy_path(tables, name: str, dest: Path) -> None:
    for rel in tables.path_files(tables.TABLES[name]):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def test_a_change_on_the_measured_path_is_named_and_one_elsewhere_is_not(tables, tmp_path):
    _copy_path(tables, "demo", tmp_path)
    recorded = {"path_sha256": tables.hash_files(tables.path_files(tables.TABLES["demo"], tmp_path), tmp_path)}
    assert "splip_engine/data/images.py" in recorded["path_sha256"]
    assert not any(f.startswith(("splip_engine/serve/", "splip_engine/index/", "splip_engine/cli/"))
                   for f in recorded["path_sha256"]), "CLI / serving plumbing is not on the demo's path"
    (tmp_path / "splip_engine" / "serve").mkdir(parents=True)
    (tmp_path / "splip_engine" / "serve" / "app.py").write_text("# another change\n")
    (tmp_path / "README.md").write_text("prose changed\n")
    assert tables.stale_files("demo", recorded, tmp_path) == []

    decode = tmp_path / "splip_engine" / "data" / "images.py"
    decode.write_text(decode.read_text().replace("draft", "draft ", 1))
    (tmp_path / "splip_engine" / "model" / "new_block.py").write_text("X = 1\n")
    (tmp_path / "export" / "precision.py").unlink()
    assert tables.stale_files("demo", recorded, tmp_path) == [
        "splip_engine/data/images.py (changed)", "splip_engine/model/new_block.py (new)", "export/precision.py (removed)"]


def test_render_replaces_only_the_marked_regions(tables, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name in tables.TABLES:
        shutil.copy2(ROOT / "benchmarks" / "results" / f"{name}.json", results / f"{name}.json")
    result = json.loads((results / "demo.json").read_text())
    result["commit"] = "f" * 40
    (results / "demo.json").write_text(json.dumps(result))
    text = "before\n<!-- table:demo -->\nold table\n<!-- /table:demo -->\nafter\n"
    rendered = tables.render_readme(text, results)
    assert rendered.startswith("before\n<!-- table:demo -->\n| model |") and rendered.endswith(
        "\n<!-- /table:demo -->\nafter\n")
    assert "`ffffffffff`" in rendered and "old table" not in rendered
    assert tables.render_readme(rendered, results) == rendered
