"""`splip-engine export`: works as typed from the latest run; clear lines and exit codes otherwise."""
from __future__ import annotations

import sys

from click.testing import CliRunner
import pytest

from splip_engine import save_checkpoint
from splip_engine.cli import main
from splip_engine.export import read_manifest, record_latest_checkpoint


def test_export_fp16_as_typed_exports_the_latest_run(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record_latest_checkpoint(save_checkpoint(tiny_model, "runs/exp1/checkpoint"))
    result = CliRunner().invoke(main, ["export", "--fp16"])
    assert result.exit_code == 0, result.output
    assert "exporting checkpoint runs/exp1/checkpoint to engines" in result.output
    assert "sketch: 4/4 attention layers fused (MultiHeadAttention)" in result.output
    assert "wrote engines: " in result.output
    manifest = read_manifest(tmp_path / "engines")
    assert manifest["precision"] == "fp16" and manifest["parity"]["photo"]["passed"]


def test_export_without_a_checkpoint_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", "--fp16"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: no checkpoint found: train one with `splip-engine train ...`")


@pytest.mark.parametrize(("fmt", "exit_code"), [("tensorrt", 1), ("all", 0)])
def test_missing_tensorrt_is_one_clear_line_and_onnx_is_still_written(fmt, exit_code, cached_tracing, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    out = tmp_path / "engines"
    result = CliRunner().invoke(main, ["export", "--clip-model", "tiny", "--pretrained", "", "--format", fmt,
                                       "--out", str(out)])
    assert result.exit_code == exit_code, result.output
    line = "TensorRT is not installed (pip install 'splip-engine[gpu]' on a CUDA machine): no TensorRT plans " \
           "built; wrote the ONNX engines only"
    stream = result.stderr if fmt == "tensorrt" else result.stdout
    assert [text for text in stream.splitlines() if "TensorRT" in text] == \
        [("error: " if fmt == "tensorrt" else "note: ") + line]
    assert set(read_manifest(out)["files"]) >= {"sketch.onnx", "photo.onnx"}


def test_bad_threshold_flag_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", "--clip-model", "tiny", "--pretrained", "", "--threshold", "cos"])
    assert result.exit_code == 2
    assert "--threshold 'cos': expected METRIC=NUMBER" in result.stderr


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "splip-engine export --fp16" in result.output
