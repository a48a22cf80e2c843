"""Gallery updates without downtime, on a real server on 127.0.0.1: while concurrent clients
query /search and v2 infer, `update_index` writes new versions (rows added near the queries, rows
removed) and the server switches to them (POST /admin/reload and SIGHUP). Zero requests fail, and
every answer, including each multi-image v2 request, equals the Python API's answer on the one
version it reports; /healthz, /v2/models/splip and /metrics report the version served."""
from __future__ import annotations

import json
import os
import signal
import struct
import threading

import httpx
import numpy as np
import pytest

from splip_engine.index import GalleryIndex, StoreWriter, build_index, open_store, update_index
from splip_engine.serve import ServeSettings, create_app
from splip_engine.serve.server import _reload_on_sighup

from .helpers import running_server, wait_until

TIMEOUT = httpx.Timeout(30.0)
N_BASE, K, N_CLIENTS = 300, 8, 6


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def versions(tiny_encoder, sketches, tmp_path_factory):
    """Stores v1..v4 of a gallery and the exact Python-API index of each; each later version adds
    photos right next to the query sketches (so every answer changes) and removes some."""
    root = tmp_path_factory.mktemp("reload")
    rng = np.random.default_rng(7)
    queries = tiny_encoder.embed(sketches[:4], "sketch")  # (4, D)
    base = _unit(rng.standard_normal((N_BASE, tiny_encoder.embedding_dim)))
    engine = {"engine_hash": tiny_encoder.manifest.get("engine_hash"), "embedding_dim": tiny_encoder.embedding_dim}
    rows, ids, stores = list(base), [f"g{i}" for i in range(N_BASE)], []
    for version in range(1, 5):
        if version > 1:  # 12 photos close to the queries, and the 20 oldest photos gone
            near = _unit(np.repeat(queries, 3, axis=0) + 0.05 * rng.standard_normal((12, queries.shape[1])))
            rows, ids = rows[20:] + list(near), ids[20:] + [f"v{version}-{i}" for i in range(12)]
        path = root / f"store-v{version}"
        with StoreWriter(path, queries.shape[1], "photo", engine) as writer:
            writer.add(np.asarray(rows), ids, [f"/photos/{i}.jpg" for i in ids])
        stores.append(open_store(path))
    references = {v + 1: GalleryIndex.build_from_store(store, "flat") for v, store in enumerate(stores)}
    return root, stores, references


def _bytes_tensor(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def test_index_updates_under_concurrent_load_fail_nothing_and_never_mix_versions(
        tiny_encoder, sketches, versions):
    root, stores, references = versions
    index_dir = root / "index"
    build_index(stores[0], index_dir, "flat")
    expected = {v: ref.search(tiny_encoder.embed(sketches[:4], "sketch"), K)[1].tolist()
                for v, ref in references.items()}  # version -> (4, K) ids
    assert len({json.dumps(e) for e in expected.values()}) == 4  # every version answers differently
    app = create_app(tiny_encoder, GalleryIndex.load(index_dir), ServeSettings(max_batch=8, max_wait_ms=2),
                     index_dir=index_dir)
    stop, answers, failures = threading.Event(), [], []
    v2_body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [4],
                                      "parameters": {"binary_data_size": len(_bytes_tensor(sketches[:4]))}}],
                          "parameters": {"k": K}, "outputs": [{"name": "ids"}]}).encode()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            while not stop.is_set():
                try:
                    if n % 2:  # /search: one sketch
                        q = len(answers) % 4
                        r = http.post("/search", params={"k": K}, content=sketches[q], headers={"Content-Type": "image/png"})
                        if r.status_code != 200:
                            failures.append((r.status_code, r.text))
                            continue
                        body = r.json()
                        answers.append((body["index_version"], [q], [[h["id"] for h in body["results"]]]))
                    else:  # v2 infer: 4 sketches in one request, answered by one version
                        r = http.post("/v2/models/splip/infer", content=v2_body + _bytes_tensor(sketches[:4]),
                                      headers={"Inference-Header-Content-Length": str(len(v2_body))})
                        if r.status_code != 200:
                            failures.append((r.status_code, r.text))
                            continue
                        body = r.json()
                        ids = np.asarray(body["outputs"][0]["data"]).reshape(4, K).tolist()
                        answers.append((int(body["model_version"]), [0, 1, 2, 3], ids))
                except httpx.HTTPError as e:
                    failures.append(("transport", repr(e)))

    previous_sighup = signal.getsignal(signal.SIGHUP)
    with running_server(app) as url:
        _reload_on_sighup(app.state.service)  # the handler run_server installs
        try:
            threads = [threading.Thread(target=client, args=(n,)) for n in range(N_CLIENTS)]
            for thread in threads:
                thread.start()
            for version, store in enumerate(stores[1:], start=2):
                wait_until(lambda: len(answers) >= 20 * (version - 1), timeout=60)  # load on the old version
                report = update_index(store, index_dir)
                assert (report["version"], report["added"], report["removed"], report["rebuilt"]) == (version, 12, 20, None)
                if version == 3:  # SIGHUP: the reload runs in the background
                    os.kill(os.getpid(), signal.SIGHUP)
                    wait_until(lambda: _served(url) == version, timeout=30)
                else:
                    reload = httpx.post(f"{url}/admin/reload", timeout=TIMEOUT).json()
                    assert (reload["version"], reload["previous_version"]) == (version, version - 1)
            wait_until(lambda: sum(a[0] == 4 for a in answers) >= 20, timeout=60)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            signal.signal(signal.SIGHUP, previous_sighup)
        meta = httpx.get(f"{url}/v2/models/splip", timeout=TIMEOUT).json()
        metrics = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    assert failures == []
    served = {version for version, _, _ in answers}
    assert served == {1, 2, 3, 4}, served
    for version, rows, ids in answers:  # each answer is the Python API's on the version it names
        assert ids == [expected[version][q] for q in rows], (version, rows)
    assert meta["versions"] == ["4"] and "splip_index_version 4" in metrics
    assert 'splip_index_reloads_total{result="ok"} 3' in metrics
    print(f"\n{len(answers)} answers over 4 versions, 0 failed")


def _served(url: str) -> int:
    return httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()["index"]["version"]


def test_a_failed_reload_keeps_serving_the_old_version(tiny_encoder, sketches, versions, tmp_path):
    _, stores, _ = versions
    index_dir = tmp_path / "index"
    build_index(stores[0], index_dir, "flat")
    app = create_app(tiny_encoder, GalleryIndex.load(index_dir), index_dir=index_dir)
    with running_server(app) as url:
        (index_dir / "index.json").write_text("{broken")
        response = httpx.post(f"{url}/admin/reload", timeout=TIMEOUT)
        assert response.status_code == 409
        assert "index.json is unreadable" in response.json()["detail"] and "still serving version 1" in \
            response.json()["detail"]
        search = httpx.post(f"{url}/search", content=sketches[0], headers={"Content-Type": "image/png"}, timeout=TIMEOUT)
        assert search.status_code == 200 and search.json()["index_version"] == 1
        assert 'splip_index_reloads_total{result="failed"} 1' in httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
