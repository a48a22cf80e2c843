"""`splip-engine serve`: the real command in a subprocess on 127.0.0.1 answers searches like the
Python API, switches to an updated index on SIGHUP and stops on SIGTERM; an index from another
engine is refused before serving."""
from __future__ import annotations

import signal
import time

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.index import GalleryIndex

from .helpers import free_port, reference_search, serve_process


@pytest.mark.slow  # a fresh Python process importing torch, open_clip, faiss: ~10 s
def test_serve_command_answers_searches_reloads_on_sighup_and_stops_on_sigterm(
        tiny_checkpoint, tiny_encoder, gallery_index, sketches, tmp_path):
    index_dir = gallery_index.save(tmp_path / "index")
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with serve_process(["--engine", str(tiny_checkpoint), "--index", str(index_dir), "--port", str(port), "--backend",
                        "torch", "--device", "cpu", "--max-wait-ms", "1"], log,
                       lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200) as proc:
        response = httpx.post(f"{url}/search", files={"image": ("s.png", sketches[3], "image/png")},
                              data={"k": "4"}, timeout=20)
        assert response.status_code == 200, response.text
        scores, ids = reference_search(tiny_encoder, gallery_index, [sketches[3]], 4)
        assert [hit["id"] for hit in response.json()["results"]] == list(ids[0])
        np.testing.assert_allclose([hit["score"] for hit in response.json()["results"]], scores[0], atol=1e-5)
        kept = GalleryIndex.load(index_dir)  # the next version: 20 photos fewer
        kept.remove(list(kept.ids[:20]))
        kept.info["version"] = 2
        kept.save(index_dir)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/healthz", timeout=5).json()["index"]["version"] != 2:
            assert time.monotonic() < deadline, "SIGHUP did not switch to version 2"
            time.sleep(0.1)
        assert httpx.get(f"{url}/healthz", timeout=5).json()["index"]["size"] == len(gallery_index) - 20
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the app's shutdown, then re-raises SIGTERM so the exit status says why
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in log.read_text()


def test_index_of_another_engine_is_refused(tiny_checkpoint, tmp_path):
    vectors = np.eye(3, 32, dtype=np.float32)  # (3, 32): the tiny engine embeds to 64 dims
    index_dir = GalleryIndex.build(vectors, ["a", "b", "c"], kind="flat").save(tmp_path / "index")
    result = CliRunner().invoke(main, ["serve", "--engine", str(tiny_checkpoint), "--index", str(index_dir),
                                       "--backend", "torch", "--device", "cpu"])
    assert result.exit_code == 2
    assert "the index was built with another engine: embedding_dim 32 (index) != 64 (engine)" in result.output
