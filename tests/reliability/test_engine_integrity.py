"""Engine integrity: a missing, truncated or tampered graph, a manifest of a newer format, a
manifest that does not match its engine (embedding dim, image size, modality), an index or a store
built with another engine -- each refused at load with a message naming the problem and the fix,
by the Python API and by the CLI (one `error:` line, exit code 2)."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.errors import SpLIPError
from splip_engine.index import GalleryIndex, StoreWriter
from splip_engine.retrieval import search_images
from splip_engine.runtime import load_engine
from splip_engine.serve import run_server

from .image_cases import CASES_BY_KIND


def _edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(engine: Path) -> None:
        manifest = json.loads((engine / "manifest.json").read_text())
        change(manifest)
        (engine / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _truncate(engine: Path) -> None:
    data = (engine / "sketch.onnx").read_bytes()
    (engine / "sketch.onnx").write_bytes(data[: len(data) // 3])


def _flip_one_byte(engine: Path) -> None:
    data = bytearray((engine / "sketch.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit
    (engine / "sketch.onnx").write_bytes(bytes(data))


def _drop_photo_graph(manifest: dict) -> None:
    del manifest["files"]["photo.onnx"]


def _swap_modalities(manifest: dict) -> None:
    manifest["files"]["sketch.onnx"]["modality"], manifest["files"]["photo.onnx"]["modality"] = "photo", "sketch"


_GRAPH = r"\S*/sketch\.onnx"
_REEXPORT = "re-export the engine"
DAMAGE = {  # name: (what is done to a copy of the engine, load_engine kwargs, the message)
    "missing_graph": (lambda e: (e / "sketch.onnx").unlink(), {},
                      rf"engine file {_GRAPH} listed in manifest\.json is missing; {_REEXPORT}"),
    "missing_graph_unverified": (lambda e: (e / "sketch.onnx").unlink(), {"verify": False},
                                 rf"cannot load {_GRAPH} with ONNX Runtime \(.*NO_SUCHFILE.*\): the file is missing, "
                                 rf"damaged or not an engine graph; {_REEXPORT}"),
    "truncated_graph": (_truncate, {},
                        rf"engine file {_GRAPH} does not match its sha256 in manifest\.json .*: it was modified or "
                        rf"damaged; {_REEXPORT}"),
    "truncated_graph_unverified": (_truncate, {"verify": False},
                                   rf"cannot load {_GRAPH} with ONNX Runtime \(.*INVALID_PROTOBUF.*\)"),
    "tampered_graph": (_flip_one_byte, {}, rf"engine file {_GRAPH} does not match its sha256 in manifest\.json"),
    "newer_manifest_format": (_edit_manifest(lambda m: m.update(format_version=m["format_version"] + 1)), {},
                              r"manifest\.json was written by a newer splip-engine \(format 2 > 1\): upgrade"),
    "manifest_embedding_dim_differs": (_edit_manifest(lambda m: m.update(embedding_dim=128)), {},
                                       rf"{_GRAPH} has output shape \(N, 64\) but manifest\.json says \(N, 128\) .*"
                                       rf"the manifest does not match the engine files; {_REEXPORT}"),
    "manifest_embedding_dim_differs_torch": (_edit_manifest(lambda m: m.update(embedding_dim=128)), {"backend": "torch"},
                                             r"the manifest does not match the model it describes: embedding_dim 128 "
                                             rf"\(manifest\) != 64 \(model\); {_REEXPORT}"),
    "manifest_image_size_differs": (_edit_manifest(lambda m: m.update(image_size=64)), {},
                                    rf"{_GRAPH} has input shape \(N, 3, 32, 32\) but manifest\.json says \(N, 3, 64, 64\)"),
    "manifest_without_embedding_dim": (_edit_manifest(lambda m: m.pop("embedding_dim")), {},
                                       r"manifest\.json has embedding_dim=None, not a positive integer; re-export"),
    "manifest_lists_no_photo_graph": (_edit_manifest(_drop_photo_graph), {},
                                      r"manifest\.json has no photo graph \(photo\.onnx is not listed\): the manifest "
                                      rf"does not match the engine files; {_REEXPORT}"),
    "manifest_swaps_modalities": (_edit_manifest(_swap_modalities), {},
                                  r"manifest\.json has no sketch graph \(sketch\.onnx is listed as the 'photo' graph\)"),
}


@pytest.fixture
def damaged(tiny_engine_dir, tmp_path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(tiny_engine_dir, copy)
        DAMAGE[name][0](copy)
        return copy
    return make


def _cli_error(argv: list[str]) -> str:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_or_mismatched_engine_is_refused_with_a_clear_message(name, damaged, tiny_gallery_index_dir, tmp_path):
    engine = damaged(name)
    _, kwargs, message = DAMAGE[name]
    with pytest.raises(SpLIPError, match=message):
        load_engine(engine, device="cpu", **{"backend": "onnxruntime", **kwargs}).embed(
            [np.zeros((8, 8, 3), np.uint8)], "sketch")
    if kwargs.get("verify", True):  # the CLI always verifies
        query = CASES_BY_KIND["one_pixel"].make(tmp_path)
        line = _cli_error(["search", "--engine", str(engine), "--index", str(tiny_gallery_index_dir),
                           "--backend", kwargs.get("backend", "onnxruntime"), "--device", "cpu", str(query)])
        assert re.search(message, line), line


def _foreign_index(tmp_path: Path, dim: int, engine_hash: str) -> Path:
    vectors = np.eye(dim, dtype=np.float32)[:4]
    return GalleryIndex.build(vectors, list("abcd"), "flat", engine_info={"engine_hash": engine_hash}).save(
        tmp_path / f"foreign-{dim}")


@pytest.mark.parametrize("dim, engine_hash, message", [
    (32, None, r"embedding_dim 32 \(index\) != 64 \(engine\)"),
    (64, "0" * 64, r"engine_hash '0{64}' \(index\) != '[0-9a-f]{64}' \(engine\)"),
], ids=["other_dim", "other_engine_hash"])
def test_an_index_built_with_another_engine_is_refused(dim, engine_hash, message, tiny_ort_encoder, tiny_engine_dir, tmp_path):
    index_dir = _foreign_index(tmp_path, dim, engine_hash)
    refusal = rf"the index was built with another engine: {message}; re-embed the gallery with this engine"
    index = GalleryIndex.load(index_dir)
    with pytest.raises(SpLIPError, match=refusal):
        index.check_compatible(tiny_ort_encoder.manifest)
    if dim != tiny_ort_encoder.embedding_dim:  # the library search refuses a dim mismatch on its own too
        with pytest.raises(SpLIPError, match=r"engine embeds to 64 dims but the index holds 32"):
            search_images(tiny_ort_encoder, index, [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(SpLIPError, match=refusal):  # serve refuses before it listens
        run_server(tiny_engine_dir, index_dir, backend="onnxruntime", device="cpu")
    query = CASES_BY_KIND["one_pixel"].make(tmp_path)
    line = _cli_error(["search", "--engine", str(tiny_engine_dir), "--index", str(index_dir), "--device", "cpu", str(query)])
    assert re.search(refusal, line), line


@pytest.mark.parametrize("change, message", [
    ({"engine_hash": "0" * 64}, r"engine_hash '0{64}' != '[0-9a-f]{64}'"),
    ({"modality": "sketch"}, r"modality 'sketch' != 'photo'"),
], ids=["other_engine_hash", "other_modality"])
def test_embedding_into_a_store_of_another_engine_is_refused(change, message, tiny_ort_encoder, tiny_engine_dir, tmp_path):
    engine = {"engine_hash": tiny_ort_encoder.manifest["engine_hash"], **{k: v for k, v in change.items() if k == "engine_hash"}}
    with StoreWriter(tmp_path / "store", tiny_ort_encoder.embedding_dim, change.get("modality", "photo"), engine) as writer:
        writer.add(np.eye(tiny_ort_encoder.embedding_dim, dtype=np.float32)[:1], ["old"], ["/old.png"])
    photos = tmp_path / "photos"
    photos.mkdir()
    CASES_BY_KIND["one_pixel"].make(photos)
    line = _cli_error(["embed", "--engine", str(tiny_engine_dir), "--input", str(photos), "--out", str(tmp_path / "store"),
                       "--workers", "0", "--device", "cpu"])
    assert re.search(rf"store \S+ was written by another engine: {message}; use a new --out", line), line
