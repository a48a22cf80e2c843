"""manifest.json: sha256 per file catches tampering; newer formats and broken dirs are refused clearly."""
from __future__ import annotations

import json

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
def engine_dir(tmp_path):
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


def test_untouched_engine_dir_verifies(engine_dir):
    manifest = read_manifest(engine_dir)
    verify_files(engine_dir, manifest)
    assert manifest["files"]["sketch.onnx"]["bytes"] == len(b"graph bytes")
    assert manifest["files"]["sketch.onnx"]["modality"] == "sketch"
    assert manifest["engine_hash"] == engine_hash(manifest["files"])


def test_tampered_file_is_refused_naming_it(engine_dir):
    (engine_dir / "sketch.onnx").write_bytes(b"graph bytez")  # same size, one byte changed
    with pytest.raises(SpLIPError, match=r"sketch\.onnx does not match its sha256 .*re-export"):
        verify_files(engine_dir, read_manifest(engine_dir))


def test_missing_file_is_refused_naming_it(engine_dir):
    (engine_dir / "checkpoint" / "config.json").unlink()
    with pytest.raises(SpLIPError, match=r"config\.json listed in manifest\.json is missing"):
        verify_files(engine_dir, read_manifest(engine_dir))


def test_newer_manifest_format_is_refused(engine_dir):
    path = engine_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["format_version"] = MANIFEST_FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    expected = (rf"written by a newer splip-engine \(format {MANIFEST_FORMAT_VERSION + 1} > "
                rf"{MANIFEST_FORMAT_VERSION}\): upgrade")
    with pytest.raises(SpLIPError, match=expected):
        read_manifest(engine_dir)


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


def test_engine_hash_changes_with_any_file_hash(engine_dir):
    files = read_manifest(engine_dir)["files"]
    changed = {**files, "sketch.onnx": {**files["sketch.onnx"], "sha256": "0" * 64}}
    assert engine_hash(changed) != engine_hash(files)
