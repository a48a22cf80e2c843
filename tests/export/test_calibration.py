"""Static int8 calibrated on the user's images (`export --int8 --calibration`): every input kind
`embed` reads calibrates, each tower on its own modality; the engines (ONNX Runtime QDQ and the
NNCF OpenVINO IR) pass a gate on held-out images; a calibration that fails the gate is refused
with its numbers and nothing is written."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.data.transforms import PreprocessSpec, preprocess_batch
from splip_engine.errors import SpLIPError
from splip_engine.export import export_engines, read_manifest
from splip_engine.export.calibration import HELD_OUT_FILE, read_calibration, read_held_out
from splip_engine.runtime import load_engine

from runtime.shardfactory import photo_jpegs, quickdraw_line, write_bytes_parquet, write_folder, write_shards

SPEC = PreprocessSpec(image_size=32, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
PHOTOS = photo_jpegs(12, seed=3)
HELD_OUT = 4


def _digests(pixels: np.ndarray) -> list[str]:
    return sorted(hashlib.sha256(row.tobytes()).hexdigest() for row in pixels)


def _as_kind(kind: str, root):
    """PHOTOS written as one input kind; returns what --calibration-photo would name."""
    folder = write_folder(root / "folder", PHOTOS)
    if kind == "folder":
        return folder
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    if kind == "list":
        (root / "list.txt").write_text("\n".join(paths) + "\n")
        return root / "list.txt"
    if kind == "parquet-paths":
        pq.write_table(pa.table({"id": [f"x{i}" for i in range(len(paths))], "path": paths}), root / "p.parquet")
        return root / "p.parquet"
    if kind == "parquet-bytes":
        return write_bytes_parquet(root / "b.parquet", PHOTOS)
    write_shards(root / "shards", PHOTOS, per_shard=5)
    return root / "shards"


@pytest.mark.parametrize("kind", ["folder", "list", "parquet-paths", "parquet-bytes", "tar"])
def test_every_input_kind_calibrates_with_the_same_images(kind, tmp_path):
    lines = [quickdraw_line(f"{i:04d}", word="cat") for i in range(HELD_OUT + 2)]
    (tmp_path / "sketches.ndjson").write_text("\n".join(lines) + "\n")  # QuickDraw strokes: the sketch input
    calibration = read_calibration({"sketch": str(tmp_path / "sketches.ndjson"), "photo": str(_as_kind(kind, tmp_path))},
                                   SPEC, count=100, held_out=HELD_OUT)
    expected, errors = preprocess_batch(list(PHOTOS.values()), "photo", SPEC)
    assert not errors
    photos = np.concatenate([calibration.pixels["photo"], calibration.held_out["photo"]])
    assert _digests(photos) == _digests(expected)  # every photo once, preprocessed as the engine will see it
    assert (len(calibration.pixels["photo"]), len(calibration.held_out["photo"])) == (len(PHOTOS) - HELD_OUT, HELD_OUT)
    assert len(calibration.pixels["sketch"]) == 2 and calibration.pixels["sketch"].std() > 0  # rendered strokes


def test_count_caps_the_images_read_and_bad_images_are_skipped_and_listed(tmp_path):
    folder = write_folder(tmp_path / "photos", PHOTOS)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    calibration = read_calibration({"sketch": str(folder), "photo": str(folder)}, SPEC, count=3, held_out=HELD_OUT)
    assert len(calibration.pixels["photo"]) + len(calibration.held_out["photo"]) <= 3 + HELD_OUT
    everything = read_calibration({"sketch": str(folder), "photo": str(folder)}, SPEC, count=100, held_out=HELD_OUT)
    assert [bad_id for bad_id, _ in everything.skipped["photo"]] == ["broken.jpg"]
    assert everything.describe()["photo"] == {"source": str(folder), "images": len(PHOTOS) - HELD_OUT,
                                              "held_out": HELD_OUT, "skipped": 1}


def test_too_few_images_is_refused_with_the_counts(tmp_path):
    folder = write_folder(tmp_path / "few", dict(list(PHOTOS.items())[:3]))
    with pytest.raises(SpLIPError, match=r"has 3 readable sketch images \(0 skipped\); at least 5 are needed"):
        read_calibration({"sketch": str(folder), "photo": str(folder)}, SPEC, held_out=HELD_OUT)


@pytest.fixture(scope="module")
def calibrated_engine(tiny_model, traced, tmp_path_factory):
    """tiny_model exported with --int8 --calibration on a mini set (sketch/ and photo/) of 72 images
    per tower: 40 calibrate, 32 are held out (the `mini` fixture's 36 leave 4 to calibrate on,
    which the gate rightly refuses for the photo tower: min cosine 0.986)."""
    from splip_engine.data.mini import make_mini_dataset
    from splip_engine.export import exporter

    data = make_mini_dataset(tmp_path_factory.mktemp("calibration") / "ds", classes=6, per_class=12, size=32)
    out = tmp_path_factory.mktemp("calibrated") / "engine"
    original, exporter.export_tower = exporter.export_tower, traced
    try:
        report = export_engines(tiny_model, out, int8=True, calibration=data.root)
    finally:
        exporter.export_tower = original
    assert report, report.errors
    return out, report


def test_calibrated_export_writes_static_qdq_and_an_nncf_ir_gated_on_held_out_images(calibrated_engine):
    out, report = calibrated_engine
    manifest = read_manifest(out)
    assert manifest["precision"] == "int8"
    assert {m: t["held_out"] for m, t in manifest["calibration"]["towers"].items()} == {"sketch": 32, "photo": 32}
    ops = {node.op_type for node in onnx.load(str(out / "sketch.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DynamicQuantizeLinear" not in ops  # static, not dynamic
    for modality in ("sketch", "photo"):
        assert manifest["files"][f"{modality}.openvino.xml"]["format"] == "openvino-ir"
        assert report.parity[modality]["n_probe"] == 32 and report.parity[modality]["passed"]
        assert report.openvino[f"{modality}.openvino.xml"]["passed"]
    xml = (out / "sketch.openvino.xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # NNCF's int8 quantizers are in the IR
    # the held-out images travel with the engine (float16) for the int8 engines' load gate
    assert manifest["files"][HELD_OUT_FILE]["format"] == "calibration-held-out"
    stored = read_held_out(out / HELD_OUT_FILE)
    for modality in ("sketch", "photo"):
        assert stored[modality].shape == report.held_out[modality].shape == (32, 3, 32, 32)
        np.testing.assert_allclose(stored[modality], report.held_out[modality], rtol=1e-3, atol=1e-3)


def test_both_calibrated_engines_load_and_agree_with_torch(calibrated_engine, tiny_engine_dir):
    out, _ = calibrated_engine
    pixels = np.random.default_rng(1).standard_normal((6, 3, 32, 32), dtype=np.float32)
    reference = load_engine(tiny_engine_dir, backend="torch", device="cpu").embed_pixels(pixels, "photo")
    with load_engine(out, backend="openvino", device="cpu") as ov_int8, \
            load_engine(out, backend="onnxruntime", device="cpu") as ort_int8:
        assert ov_int8.precision == "int8" and all(r["passed"] for r in ov_int8.parity.values())
        # gated at load on the 32 held-out images (not the 40 synthetic probes) with the export's int8 bounds
        assert {m: (r["n_probe"], r["thresholds"]) for m, r in ov_int8.parity.items()} == \
            {m: (32, {"min_cosine": 0.99, "top10_agreement": 0.9}) for m in ("sketch", "photo")}
        for engine in (ov_int8, ort_int8):
            cosine = np.sum(engine.embed_pixels(pixels, "photo") * reference, axis=1)  # (6,) unit rows
            assert cosine.min() > 0.95, (engine, cosine)  # int8 on random probes: close, not equal


def test_a_calibration_failing_its_gate_is_refused_with_numbers_and_nothing_written(tiny_model, mini, cached_tracing,
                                                                                   tmp_path):
    out = tmp_path / "refused"
    result = CliRunner().invoke(main, ["export", "--clip-model", "tiny", "--pretrained", "", "--int8",
                                       "--calibration", str(mini.root), "--calibration-count", "4",
                                       "--threshold", "min_cosine=0.9999999", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "failed the int8 parity gate: min_cosine 0.99" in result.output
    assert "OpenVINO int8 (NNCF) engine failed the int8 calibration gate: min_cosine 0.99" in result.output
    assert f"nothing written to {out}" in result.output
    assert not out.exists()


def test_calibration_needs_int8_and_both_towers(tiny_model, mini, tmp_path):
    with pytest.raises(SpLIPError, match="--calibration calibrates int8 engines: pass it with --int8"):
        export_engines(tiny_model, tmp_path / "x", calibration=mini.root)
    result = CliRunner().invoke(main, ["export", "--int8", "--calibration-sketch", str(mini.sketch_root),
                                       "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "pass both --calibration-sketch and --calibration-photo" in result.output
    with pytest.raises(SpLIPError, match=r"expected .*/photo"):
        export_engines(tiny_model, tmp_path / "z", int8=True, calibration=mini.sketch_root.parent / "sketch")
