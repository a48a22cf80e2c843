"""manifest.json: what it records, a missing file, missing or malformed manifests. (Tampered files and newer
formats are refused through load_engine and the CLI: tests/reliability/test_engine_integrity.py.)"""
from __future__ import annotations


import pytest

from splip_engine.errors import SpLIPError
from splip_engine.export.manifest import (
    MANIFEST_FILE,
    MANIFEST_FORMAT_VERSION,
    describe_file,
    engine_hash,
    read_manifest,
    verify_files,
    write_manifest,
)


@pytest.fixture
def minimal_engine_dir(tmp_path):
    """A minimal engine dir: two files and a manifest listing them."""
    (tmp_path / "sketch.onnx").write_bytes(b"graph bytes")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    files = {
        "sketch.onnx": describe_file(tmp_path, "sketch.onnx", "onnx", "sketch"),
        "checkpoint/config.json": describe_file(tmp_path, "checkpoint/config.json", "splip-checkpoint"),
    }
    write_manifest(tmp_path, {"format_version": MANIFEST_FORMAT_VERSION, "files": files})
    return tmp_path


def test_untouched_engine_dir_verifies(minimal_engine_dir):
    manifest = read_manifest(minimal_engine_dir)
    verify_files(minimal_engine_dir, manifest)
    assert manifest["files"]["sketch.onnx"]["bytes"] == len(b"graph bytes")
    assert manifest["files"]["sketch.onnx"]["modality"] == "sketch"
    assert manifest["engine_hash"] == engine_hash(manifest["files"])



def test_missing_file_is_refused_naming_it(minimal_engine_dir):
    (minimal_engine_dir / "checkpoint" / "config.json").unlink()
    with pytest.raises(SpLIPError, match=r"config\.json listed in manifest\.json is missing"):
        verify_files(minimal_engine_dir, read_manifest(minimal_engine_dir))



def test_missing_dir_and_manifest_are_named(tmp_path):
    with pytest.raises(SpLIPError, match=r"engine dir .*nowhere does not exist"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(SpLIPError, match=r"has no manifest\.json: not an engine dir"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("text", ["{not json", '{"files": {}}', '{"format_version": "1", "files": {}}'])
def test_malformed_manifest_is_refused(tmp_path, text):
    (tmp_path / MANIFEST_FILE).write_text(text)
    with pytest.raises(SpLIPError, match=r"manifest\.json (is not valid JSON|has no integer format_version)"):
        read_manifest(tmp_path)


def test_engine_hash_changes_with_any_file_hash(minimal_engine_dir):
    files = read_manifest(minimal_engine_dir)["files"]
    changed = {**files, "sketch.onnx": {**files["sketch.onnx"], "sha256": "0" * 64}}
    assert engine_hash(changed) != engine_hash(files)
