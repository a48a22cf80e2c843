"""`splip-engine embed` on QuickDraw drawings (issue 12, "an .ndjson of 3 drawings embeds as 3
rows"): the input registry (issue 11) reads each line of a QuickDraw `.ndjson` as a drawing with
id = its key_id, and lists a malformed line by its byte offset without losing the others."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.data.images import load_image
from splip_engine.index import open_store

from data.imagefactory import STROKES, quickdraw_line

KEY_IDS = ["4503599627370496", "5147947173937152", "6755399441055744"]


def _drawing(k: int) -> bytes:
    """The k-th test drawing: the first k + 2 strokes of the house (three different sketches)."""
    return quickdraw_line(STROKES[:k + 2], KEY_IDS[k])


def test_an_ndjson_of_three_drawings_embeds_as_three_rows_keyed_by_key_id(tiny_engine_dir, tiny_ort_encoder,
                                                                           tmp_path):
    broken = quickdraw_line(STROKES, "1")[:-40]  # a line cut mid-array, between the drawings
    (tmp_path / "house.ndjson").write_bytes(b"\n".join([_drawing(0), broken, _drawing(1), _drawing(2)]) + b"\n")

    result = CliRunner().invoke(main, ["embed", "--engine", str(tiny_engine_dir), "--input",
                                       str(tmp_path / "house.ndjson"), "--out", str(tmp_path / "store"),
                                       "--modality", "sketch", "--workers", "0", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "store")
    assert sorted(store.ids) == KEY_IDS  # one row per drawing, its id the drawing's key_id
    errors = [json.loads(line) for line in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    offset = len(_drawing(0)) + 1  # the broken line's byte offset in the file
    assert [e["id"] for e in errors] == [f"house/@{offset}"]
    assert "is not a QuickDraw drawing with a key_id" in errors[0]["reason"]
    # each row is its own drawing, rendered as a sketch (different strokes, different vectors)
    rendered = {}
    for k, key_id in enumerate(KEY_IDS):
        (tmp_path / f"{key_id}.ndjson").write_bytes(_drawing(k) + b"\n")  # the drawing alone, as a file
        rendered[key_id] = load_image(tmp_path / f"{key_id}.ndjson")
    expected = tiny_ort_encoder.embed([rendered[i] for i in store.ids], "sketch")  # (3, D)
    np.testing.assert_allclose(store.embeddings(np.float32), expected, atol=2e-3)  # float16 storage
    assert np.linalg.matrix_rank(expected, tol=1e-3) == 3
