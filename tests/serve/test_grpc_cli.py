"""`splip-engine serve --grpc-port --store`: the real command in a subprocess on 127.0.0.1 answers
tritonclient.grpc like /search (hits with their stored metadata), asks for the token on gRPC too,
writes gRPC access-log lines and stops on SIGTERM; a non-loopback --host without a token is
refused before serving, gRPC port included."""
from __future__ import annotations

import json
import signal

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.index import StoreWriter, build_index, open_store

from .helpers import free_port, make_png, serve_process

TOKEN = "cli-grpc-token-0123456789abcdef"


def test_non_loopback_grpc_without_token_is_refused(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["serve", "--engine", str(tiny_checkpoint), "--index", str(tmp_path),
                                       "--host", "0.0.0.0", "--grpc-port", "8001"], env={"SPLIP_AUTH_TOKEN": ""})
    assert result.exit_code != 0 and "refusing to serve on 0.0.0.0 without authentication" in result.output


@pytest.mark.slow  # a fresh Python process importing torch, open_clip, faiss: ~10 s
def test_serve_command_speaks_grpc_with_metadata(tiny_checkpoint, tiny_encoder, tmp_path):
    tritongrpc = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    dim = tiny_encoder.embedding_dim
    vectors = np.random.default_rng(3).standard_normal((40, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"shard0/{i:06d}" for i in range(40)]
    engine = {"engine_hash": tiny_encoder.manifest.get("engine_hash"), "embedding_dim": dim}
    with StoreWriter(tmp_path / "store", dim, "photo", engine) as writer:
        writer.add(vectors, ids, ["/data/shard0.tar"] * 40,
                   metadata={"key": [i[-6:] for i in ids], "caption": [f"photo {i}" for i in ids],
                             "json": [json.dumps({"n": n}) for n in range(40)]})
    build_index(open_store(tmp_path / "store"), tmp_path / "index", "flat")
    (tmp_path / "token").write_text(TOKEN)
    port, grpc_port, log = free_port(), free_port(), tmp_path / "serve.log"
    auth = {"authorization": f"Bearer {TOKEN}"}
    client = tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    args = ["--engine", str(tiny_checkpoint), "--index", str(tmp_path / "index"), "--store", str(tmp_path / "store"),
            "--port", str(port), "--grpc-port", str(grpc_port), "--auth-token-file", str(tmp_path / "token"),
            "--backend", "torch", "--device", "cpu", "--max-wait-ms", "1"]
    with serve_process(args, log, lambda: client.is_server_ready(headers=auth, client_timeout=10)) as proc:
        image = make_png(9)
        tensor = tritongrpc.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image], dtype=object))
        result = client.infer("splip", [tensor], headers=auth, parameters={"k": 5, "metadata": True}, client_timeout=30)
        hits = httpx.post(f"http://127.0.0.1:{port}/search", files={"image": ("s.png", image, "image/png")},
                          data={"k": "5", "metadata": "true"}, headers=auth, timeout=20).json()["results"]
        assert [i.decode() for i in result.as_numpy("ids")[0]] == [h["id"] for h in hits]
        np.testing.assert_allclose(result.as_numpy("scores")[0], [h["score"] for h in hits], atol=1e-5)
        records = [json.loads(m) for m in result.as_numpy("metadata")[0]]
        assert [r["caption"] for r in records] == [h["metadata"]["caption"] for h in hits] == \
               [f"photo {h['id']}" for h in hits]
        assert all(r["path"] == "/data/shard0.tar" and r["key"] == r["id"][-6:] for r in records)
        with pytest.raises(InferenceServerException, match="authentication required"):
            client.infer("splip", [tensor], client_timeout=30)
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"ts"')]
        grpc_lines = [line for line in lines if line["path"] == "/inference.GRPCInferenceService/ModelInfer"]
        assert [(line["status"], line["grpc_status"]) for line in grpc_lines] == [(200, "OK"), (401, "UNAUTHENTICATED")]
        assert grpc_lines[0]["images"] == 1 and grpc_lines[0]["index_version"] == 1
