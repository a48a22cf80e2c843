"""`splip-engine embed` on QuickDraw drawings (issue 12, "an .ndjson of 3 drawings embeds as 3
rows"), from a directory of `.ndjson` files, one drawing per file; the input registry (issue 11)
reads each line of each file as a drawing with id = its key_id (multi-drawing files: tests/runtime/
test_inputs.py)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.data.images import load_image
from splip_engine.index import open_store

from data.imagefactory import STROKES, quickdraw_line

KEY_IDS = ["4503599627370496", "5147947173937152", "6755399441055744"]


def test_embed_three_quickdraw_drawings_gives_three_rows_and_lists_the_malformed_one(tiny_engine_dir,
                                                                                      tiny_ort_encoder, tmp_path):
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    for k, key_id in enumerate(KEY_IDS):  # three different drawings: the first k + 2 strokes of the house
        (drawings / f"{key_id}.ndjson").write_bytes(quickdraw_line(STROKES[:k + 2], key_id) + b"\n")
    (drawings / "broken.ndjson").write_bytes(quickdraw_line(STROKES, "1")[:-40] + b"\n")  # cut mid-array

    result = CliRunner().invoke(main, ["embed", "--engine", str(tiny_engine_dir), "--input", str(drawings),
                                       "--out", str(tmp_path / "store"), "--modality", "sketch", "--workers", "0",
                                       "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "store")
    assert sorted(store.ids) == KEY_IDS  # a drawing's id is its key_id (the input registry's .ndjson ids)
    errors = [json.loads(line) for line in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == [str(drawings / "broken.ndjson")]
    assert "is not a QuickDraw drawing with a key_id" in errors[0]["reason"]
    # each row is its own drawing, rendered as a sketch (different strokes, different vectors)
    rendered = [load_image(drawings / f"{i}.ndjson") for i in store.ids]  # one drawing per file
    expected = tiny_ort_encoder.embed(rendered, "sketch")  # (3, D)
    np.testing.assert_allclose(store.embeddings(np.float32), expected, atol=2e-3)  # float16 storage
    assert np.linalg.matrix_rank(expected, tol=1e-3) == 3
