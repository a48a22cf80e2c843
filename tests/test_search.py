"""`search` with many queries, some unreadable: every readable query is answered, the others are
listed with their reason (stderr and the JSON), and the exit code tells a script which case it is."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from data.imagefactory import noise_image
from splip_engine.cli import main
from splip_engine.errors import ImageDecodeError
from splip_engine.index import GalleryIndex
from splip_engine.retrieval import search_images, search_readable

BAD = {"empty.png": b"", "text.png": b"not an image at all\n", "truncated.png": None}


@pytest.fixture
def queries(tmp_path):
    """(good query paths, bad query paths): noise PNGs, then an empty file, text and a truncated PNG."""
    good = []
    for i in range(4):
        good.append(tmp_path / f"good-{i}.png")
        noise_image(40, 40, seed=i).save(good[-1])
    bad = []
    for name, data in BAD.items():
        bad.append(tmp_path / name)
        bad[-1].write_bytes(good[0].read_bytes()[:60] if data is None else data)
    return [str(p) for p in good], [str(p) for p in bad]


def _search(tiny_engine_dir, tiny_gallery_index_dir, paths):
    return CliRunner().invoke(main, ["search", "--engine", str(tiny_engine_dir), "--index", str(tiny_gallery_index_dir),
                                     "--device", "cpu", "-k", "5", *paths])


def test_readable_queries_are_answered_beside_unreadable_ones(tiny_ort_encoder, tiny_gallery_index_dir, queries):
    good, bad = queries
    mixed = [good[0], bad[0], good[1], bad[1], bad[2], good[2], good[3]]
    index = GalleryIndex.load(tiny_gallery_index_dir)
    results = search_readable(tiny_ort_encoder, index, mixed, k=5)
    alone = search_images(tiny_ort_encoder, index, good, k=5)
    assert [entry["query"] for entry in results] == mixed  # in order, one entry per query
    answered = [entry for entry in results if "error" not in entry]
    assert [entry["query"] for entry in answered] == good
    for got, expected in zip(answered, alone):
        assert [hit["id"] for hit in got["results"]] == [hit["id"] for hit in expected["results"]]
    failed = [entry for entry in results if "error" in entry]
    assert [entry["query"] for entry in failed] == bad and all(entry["results"] == [] for entry in failed)
    with pytest.raises(ImageDecodeError, match=r"query \S+empty\.png: "):
        search_images(tiny_ort_encoder, index, mixed, k=5)


def test_search_cli_partial_failure_exits_3_and_lists_the_bad_queries(tiny_engine_dir, tiny_gallery_index_dir, queries):
    good, bad = queries
    result = _search(tiny_engine_dir, tiny_gallery_index_dir, [good[0], bad[0], good[1], bad[1], bad[2]])
    assert result.exit_code == 3, result.output
    entries = json.loads(result.stdout)
    assert [e["query"] for e in entries if "error" not in e] == good[:2]
    assert all(len(e["results"]) == 5 for e in entries if "error" not in e)
    assert {e["query"]: bool(e["error"]) for e in entries if "error" in e} == dict.fromkeys(bad, True)
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [f"skipped query {path}" for path in bad]
    assert lines[3].startswith("warning: 3 of 5 queries could not be read") and "exit code 3" in lines[3]
    assert "Traceback" not in result.output


def test_search_cli_exit_codes_all_good_and_none_readable(tiny_engine_dir, tiny_gallery_index_dir, queries):
    good, bad = queries
    ok = _search(tiny_engine_dir, tiny_gallery_index_dir, good)
    assert ok.exit_code == 0 and ok.stderr == "" and len(json.loads(ok.stdout)) == len(good)
    none = _search(tiny_engine_dir, tiny_gallery_index_dir, bad)
    assert none.exit_code == 2
    assert none.stderr.strip().splitlines()[-1] == f"error: none of the {len(bad)} queries could be read (listed above)"
    assert all("error" in entry for entry in json.loads(none.stdout))
    help_text = CliRunner().invoke(main, ["search", "--help"]).output
    assert "3  some queries could not be read" in help_text and "0  every query answered" in help_text
