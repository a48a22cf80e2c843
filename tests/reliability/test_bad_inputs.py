"""Every bad or odd image kind (image_cases.CASES) through every entry point: the Python API
(`load_engine(...).embed`), the `embed` job (a real `splip-engine embed` process), the `search`
CLI and the HTTP service. A good input gives the same embedding / top-k as the Python API on the
pixels a correct decoder reads (EXIF-rotated == the rotated pixels, a GIF == its first frame, ...);
a bad one gets its specific error: listed in the errors file by `embed` (never dropped, never
fatal), one `error:` line and exit code 2 from `search`, HTTP 400 from the service."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from data.imagefactory import random_images
from serve.helpers import running_server
from splip_engine.cli import main
from splip_engine.data.images import ImageDecodeError
from splip_engine.index import GalleryIndex, open_store
from splip_engine.serve import ServeSettings, create_app

from .image_cases import CASES, ImageCase

QUERY_MODALITY = "sketch"  # Python API, search and serve take the cases as sketch queries
GALLERY_MODALITY = "photo"  # embed takes them as gallery photos
K = 5
ENTRY_POINTS = ("python_api", "embed_job", "search_cli", "serve")


@dataclass
class Embedded:
    vector: np.ndarray  # (D,) float32


@dataclass
class Answer:
    ids: list[str]
    scores: list[float]


@dataclass
class Refused:
    message: str


@dataclass
class Pipeline:
    """What the module's real runs produced: the case files, the `embed` store, the index over it."""

    files: dict[str, Path]
    photos: list[str]
    store_dir: Path
    index_dir: Path
    index: GalleryIndex
    embed_stdout: str


@pytest.fixture(scope="module")
def pipeline(tiny_engine_dir, tmp_path_factory) -> Pipeline:
    """One `splip-engine embed` process (default decode workers) over 12 good photos and every
    case, given as a file list, then a flat index over the store."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "cases").mkdir()
    files = {case.kind: case.make(root / "cases") for case in CASES}
    _, photos = random_images(root, 12, seed=7)
    (root / "inputs.txt").write_text("\n".join(photos + [str(p) for p in files.values()]) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "splip_engine", "embed", "--engine", str(tiny_engine_dir), "--input", str(root / "inputs.txt"),
         "--out", str(root / "store"), "--batch-size", "4", "--shard-size", "5"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    GalleryIndex.build_from_store(open_store(root / "store"), kind="flat").save(root / "index")
    return Pipeline(files, photos, root / "store", root / "index", GalleryIndex.load(root / "index"), proc.stdout)


@pytest.fixture(scope="module")
def server_url(tiny_ort_encoder, pipeline):
    settings = ServeSettings(max_batch=8, max_wait_ms=2, max_k=K)
    with running_server(create_app(tiny_ort_encoder, pipeline.index, settings)) as url:
        yield url


# ------------------------------------------------------------------ the entry points
def _python_api(case: ImageCase, path: Path, tiny_ort_encoder, pipeline, request) -> Embedded | Refused:
    try:
        return Embedded(tiny_ort_encoder.embed([path], QUERY_MODALITY)[0])
    except ImageDecodeError as e:
        assert str(e).startswith("image 0: ")  # the position in the batch
        return Refused(str(e))


def _embed_job(case: ImageCase, path: Path, tiny_ort_encoder, pipeline, request) -> Embedded | Refused:
    store = open_store(pipeline.store_dir)
    rows = np.flatnonzero(store.paths == str(path))
    reasons = [e["reason"] for e in store.errors() if e["path"] == str(path)]
    assert len(rows) + len(reasons) == 1, f"{path}: stored {len(rows)}x and listed {len(reasons)}x, not exactly once"
    return Embedded(store.embeddings(np.float32)[rows[0]]) if len(rows) else Refused(reasons[0])


def _search_cli(case: ImageCase, path: Path, tiny_ort_encoder, pipeline, request) -> Answer | Refused:
    result = CliRunner().invoke(main, ["search", "--engine", str(request.getfixturevalue("tiny_engine_dir")),
                                       "--index", str(pipeline.index_dir), "-k", str(K), str(path)])
    if result.exit_code == 0:
        [query] = json.loads(result.stdout)
        assert query["query"] == str(path)
        return Answer([hit["id"] for hit in query["results"]], [hit["score"] for hit in query["results"]])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), \
        f"exit code {result.exit_code}, not a user error: {result.exc_info}"
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return Refused(lines[0])


def _serve(case: ImageCase, path: Path, tiny_ort_encoder, pipeline, request) -> Answer | Refused:
    url = request.getfixturevalue("server_url")
    response = httpx.post(f"{url}/search", files={"image": (path.name, path.read_bytes(), "application/octet-stream")},
                          data={"k": str(K)}, timeout=20)
    if response.status_code == 200:
        hits = response.json()["results"]
        return Answer([hit["id"] for hit in hits], [hit["score"] for hit in hits])
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith("bad image: <bytes>")
    return Refused(detail)


_RUN = {"python_api": _python_api, "embed_job": _embed_job, "search_cli": _search_cli, "serve": _serve}
_TOLERANCE = {"python_api": 1e-6, "embed_job": 2e-3}  # embed stores float16


def _reference(entry: str, pixels: np.ndarray, tiny_ort_encoder, pipeline) -> Embedded | Answer:
    """The Python API's answer for the pixels a correct decoder reads."""
    if entry == "embed_job":
        return Embedded(tiny_ort_encoder.embed([pixels], GALLERY_MODALITY)[0])
    vector = tiny_ort_encoder.embed([pixels], QUERY_MODALITY)
    if entry == "python_api":
        return Embedded(vector[0])
    scores, ids = pipeline.index.search(vector, K)
    return Answer(list(ids[0]), list(scores[0]))


_MATRIX = [pytest.param(case, entry, id=f"{case.kind}-{entry}")
           for case in CASES for entry in ENTRY_POINTS
           if not (case.path_only and entry == "serve")]  # HTTP uploads bytes: no directory, no missing path


@pytest.mark.parametrize("case, entry", _MATRIX)
def test_every_image_kind_through_every_entry_point(case, entry, tiny_ort_encoder, pipeline, request):
    check_case(case, entry, pipeline, tiny_ort_encoder, request)


def check_case(case: ImageCase, entry: str, pipeline: Pipeline, tiny_ort_encoder, request) -> None:
    """Run `case` through `entry`: refused with its error naming the file, or what the Python API
    answers for the pixels a correct decoder reads."""
    path = pipeline.files[case.kind]
    outcome = _RUN[entry](case, path, tiny_ort_encoder, pipeline, request)
    if case.error:
        assert isinstance(outcome, Refused), f"{case.kind} was accepted by {entry}: {outcome}"
        assert re.search(case.error, outcome.message), outcome.message
        if entry != "serve":
            assert str(path) in outcome.message  # names the file
        return
    assert not isinstance(outcome, Refused), f"{case.kind} was refused by {entry}: {outcome.message}"
    reference = _reference(entry, case.expected(path), tiny_ort_encoder, pipeline)
    if isinstance(reference, Embedded):
        np.testing.assert_allclose(outcome.vector, reference.vector, atol=_TOLERANCE[entry])
    else:
        assert outcome.ids == reference.ids
        np.testing.assert_allclose(outcome.scores, reference.scores, atol=1e-5)  # batched: float order only


def test_embed_stores_every_good_input_exactly_once_and_lists_every_bad_one(pipeline):
    store = open_store(pipeline.store_dir)
    good = pipeline.photos + [str(pipeline.files[c.kind]) for c in CASES if not c.error]
    bad = [str(pipeline.files[c.kind]) for c in CASES if c.error]
    assert len(set(store.ids)) == store.count == len(good)
    assert sorted(store.paths) == sorted(good)
    assert sorted(e["path"] for e in store.errors()) == sorted(bad)
    assert f"embedded {len(good)} images" in pipeline.embed_stdout and f"{len(bad)} skipped" in pipeline.embed_stdout


@pytest.mark.parametrize("case", [c for c in CASES if c.wrong], ids=lambda c: c.kind)
def test_the_matrix_tells_the_right_decoding_from_the_naive_one(case, tiny_ort_encoder, pipeline):
    """The tolerances above would catch a decoder that skipped this case's handling (no EXIF
    rotation, the last GIF frame, black behind transparency, clipped 16-bit, CMYK read as RGB)."""
    path = pipeline.files[case.kind]
    for modality in (QUERY_MODALITY, GALLERY_MODALITY):
        right, naive = tiny_ort_encoder.embed([case.expected(path), case.wrong(path)], modality)
        assert np.abs(right - naive).max() > 10 * _TOLERANCE["embed_job"]
