"""Issue 20's hostile-input matrix: every case of hostile_cases.py through the Python API, a real
`splip-engine embed` process, the `search` CLI and the HTTP service (test_bad_inputs.py's entry
points). Each hostile file is refused with its specific reason, naming the file, within its
budget; the real-world files beside them, and the good photos, are all stored and answered as
CairoSVG draws them. The render bombs that only the time budget stops run in the slow suite."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from data.imagefactory import random_images
from serve.helpers import running_server
from splip_engine.index import GalleryIndex, open_store
from splip_engine.serve import ServeSettings, create_app

from .hostile_cases import CASES, HEAVY, ImageCase
from .test_bad_inputs import _TOLERANCE, ENTRY_POINTS, GALLERY_MODALITY, K, Pipeline, check_case

_BUDGET_S = 2.0 * 60 + 3  # the default budget's longest wait (60x its 2 s of CPU) + a kill and a respawn


def _embedded(cases: list[ImageCase], tiny_engine_dir, root) -> Pipeline:
    """One `splip-engine embed` process over 12 good photos and `cases`, then a flat index over the store."""
    (root / "cases").mkdir()
    files = {case.kind: case.make(root / "cases") for case in cases}
    _, photos = random_images(root, 12, seed=11)
    (root / "inputs.txt").write_text("\n".join(photos + [str(p) for p in files.values()]) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "splip_engine", "embed", "--engine", str(tiny_engine_dir), "--input",
         str(root / "inputs.txt"), "--out", str(root / "store"), "--batch-size", "4", "--modality", GALLERY_MODALITY],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    GalleryIndex.build_from_store(open_store(root / "store"), kind="flat").save(root / "index")
    return Pipeline(files, photos, root / "store", root / "index", GalleryIndex.load(root / "index"), proc.stdout)


@pytest.fixture(scope="module")
def hostile(tiny_engine_dir, tmp_path_factory) -> Pipeline:
    return _embedded(CASES, tiny_engine_dir, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def heavy(tiny_engine_dir, tmp_path_factory) -> Pipeline:
    return _embedded(HEAVY, tiny_engine_dir, tmp_path_factory.mktemp("heavy"))


@pytest.fixture(scope="module")
def server_url(tiny_ort_encoder, hostile):
    """The service over the hostile pipeline's index (test_bad_inputs' `_serve` asks for this fixture)."""
    with running_server(create_app(tiny_ort_encoder, hostile.index, ServeSettings(max_batch=8, max_wait_ms=2,
                                                                                   max_k=K))) as url:
        yield url


def _check(case: ImageCase, entry: str, pipeline: Pipeline, tiny_ort_encoder, request) -> None:
    start = time.monotonic()
    check_case(case, entry, pipeline, tiny_ort_encoder, request)
    assert time.monotonic() - start < _BUDGET_S + 5  # + the search CLI's engine load


@pytest.mark.parametrize("case, entry", [pytest.param(c, e, id=f"{c.kind}-{e}") for c in CASES for e in ENTRY_POINTS])
def test_hostile_inputs_through_every_entry_point(case, entry, hostile, tiny_ort_encoder, request):
    _check(case, entry, hostile, tiny_ort_encoder, request)


@pytest.mark.slow
@pytest.mark.parametrize("case, entry", [pytest.param(c, e, id=f"{c.kind}-{e}") for c in HEAVY
                                         for e in ENTRY_POINTS if e != "serve"])
def test_render_bombs_stop_at_the_budget(case, entry, heavy, tiny_ort_encoder, request):
    _check(case, entry, heavy, tiny_ort_encoder, request)


@pytest.mark.parametrize("fixture, cases", [("hostile", CASES), pytest.param("heavy", HEAVY, marks=pytest.mark.slow)])
def test_embed_stores_every_good_input_and_lists_every_hostile_one(fixture, cases, request):
    pipeline = request.getfixturevalue(fixture)
    store = open_store(pipeline.store_dir)
    good = pipeline.photos + [str(pipeline.files[c.kind]) for c in cases if not c.error]
    bad = [str(pipeline.files[c.kind]) for c in cases if c.error]
    assert sorted(store.paths) == sorted(good) and len(set(store.ids)) == store.count
    assert sorted(e["path"] for e in store.errors()) == sorted(bad)
    assert f"embedded {len(good)} images" in pipeline.embed_stdout and f"{len(bad)} skipped" in pipeline.embed_stdout


def test_the_data_image_case_tells_a_rendered_image_from_a_dropped_one(tiny_ort_encoder, hostile):
    [case] = [c for c in CASES if c.wrong]
    path = hostile.files[case.kind]
    right, dropped = tiny_ort_encoder.embed([case.expected(path), case.wrong(path)], GALLERY_MODALITY)
    assert np.abs(right - dropped).max() > 10 * _TOLERANCE["embed_job"]
