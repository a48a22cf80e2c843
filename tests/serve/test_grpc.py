"""The Open Inference Protocol over gRPC, driven by the real tritonclient.grpc against a real server
on 127.0.0.1 (uvicorn + grpc.aio in one process, as `serve --grpc-port` runs them): the same ids and
scores as /search and HTTP v2; health and metadata; the bearer token; every bad request answers
the protocol's status code with a message naming the problem; hit metadata from the store; an
index reload under gRPC load fails no request."""
from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

pytest.importorskip("grpc")
tritongrpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from splip_engine.index import GalleryIndex, StoreWriter  # noqa: E402
from splip_engine.serve import ServeSettings, create_app  # noqa: E402
from splip_engine.serve.grpc_service import attach_grpc  # noqa: E402

from .helpers import make_png, reference_search, serving_thread, wait_until  # noqa: E402

TOKEN = "grpc-test-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def store_dir(gallery_index, tmp_path_factory):
    """A store holding the gallery's ids with a caption and json per row (its embeddings unused)."""
    root = tmp_path_factory.mktemp("grpc-store") / "store"
    ids = list(gallery_index.ids)
    with StoreWriter(root, gallery_index.dim, "photo", {"engine_hash": "x"}) as writer:
        writer.add(np.eye(gallery_index.dim, dtype=np.float32)[np.arange(len(ids)) % gallery_index.dim], ids,
                   [f"/shards/{i[-1]}.tar" for i in ids],
                   metadata={"key": [i[-3:] for i in ids], "caption": [f"caption of {i}" for i in ids],
                             "json": [json.dumps({"url": f"https://x/{i}.jpg"}) for i in ids]})
    return root


@pytest.fixture(scope="module")
def served(tiny_encoder, gallery_index, store_dir, tmp_path_factory):
    """(HTTP base URL, gRPC host:port, index dir) of a token-protected server with the store's metadata."""
    index_dir = gallery_index.save(tmp_path_factory.mktemp("grpc-index") / "index")
    settings = ServeSettings(max_wait_ms=1.0, max_body_bytes=MAX_BODY, max_k=50)
    app = create_app(tiny_encoder, GalleryIndex.load(index_dir), settings, token=TOKEN, index_dir=index_dir)
    app.state.service.use_store(store_dir)
    attach_grpc(app, "127.0.0.1", 0, TOKEN)
    with serving_thread(app) as (url, _):
        wait_until(app.state.service.is_ready, 60)  # after the warm-up (engine batches, render children started)
        yield url, f"127.0.0.1:{app.state.grpc_port}", index_dir


@pytest.fixture
def client(served):
    with tritongrpc.InferenceServerClient(served[1]) as c:
        yield c


def _image_input(images: list[bytes]):
    tensor = tritongrpc.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    return tensor


def _infer(client, images, k=5, **parameters):
    return client.infer("splip", [_image_input(images)], headers=AUTH, parameters={"k": k, **parameters})


def test_same_ids_and_scores_as_search_and_http_v2(client, served, tiny_encoder, gallery_index):
    url = served[0]
    images = [make_png(seed) for seed in range(3)]
    result = _infer(client, images, k=5)
    ids, scores = result.as_numpy("ids"), result.as_numpy("scores")
    assert ids.shape == scores.shape == (3, 5) and result.as_numpy("embeddings").shape == (3, tiny_encoder.embedding_dim)
    assert result.get_response().model_version == "1"
    ref_scores, ref_ids = reference_search(tiny_encoder, gallery_index, images, 5)
    assert [[i.decode() for i in row] for row in ids] == ref_ids.tolist()
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    for position, image in enumerate(images):
        hits = httpx.post(f"{url}/search", files={"image": ("s.png", image, "image/png")}, data={"k": "5"},
                          headers=AUTH).json()["results"]
        assert [h["id"] for h in hits] == [i.decode() for i in ids[position]]
        np.testing.assert_allclose([h["score"] for h in hits], scores[position], atol=1e-5)


def test_pixels_input_and_requested_outputs(client, tiny_encoder, gallery_index):
    size = tiny_encoder.image_size
    pixels = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    tensor = tritongrpc.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    result = client.infer("splip", [tensor], outputs=[tritongrpc.InferRequestedOutput("ids")], headers=AUTH,
                          parameters={"k": 3, "modality": "photo"})
    assert [o.name for o in result.get_response().outputs] == ["ids"]
    _, ref_ids = gallery_index.search(tiny_encoder.embed_pixels(pixels, "photo"), 3)
    assert [[i.decode() for i in row] for row in result.as_numpy("ids")] == ref_ids.tolist()


def test_health_and_metadata(client, tiny_encoder):
    assert client.is_server_live() and client.is_server_ready(headers=AUTH)
    assert client.is_model_ready("splip", headers=AUTH) and client.is_model_ready("splip", "1", headers=AUTH)
    meta = client.get_model_metadata("splip", headers=AUTH, as_json=True)
    assert meta["name"] == "splip" and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("embeddings", "FP32"), ("ids", "BYTES"), ("scores", "FP32"), ("metadata", "BYTES")]
    assert meta["inputs"][1]["shape"] == ["-1", "3", str(tiny_encoder.image_size), str(tiny_encoder.image_size)]
    assert client.get_server_metadata(headers=AUTH, as_json=True)["name"] == "splip-engine"


def test_hits_carry_their_stored_metadata_on_request(client, served):
    image = make_png(4)
    result = _infer(client, [image], k=4, metadata=True)
    ids = [i.decode() for i in result.as_numpy("ids")[0]]
    records = [json.loads(m) for m in result.as_numpy("metadata")[0]]
    assert [r["id"] for r in records] == ids
    assert all(r["caption"] == f"caption of {i}" and json.loads(r["json"])["url"] == f"https://x/{i}.jpg"
               and r["path"] == f"/shards/{i[-1]}.tar" and r["key"] == i[-3:] for r, i in zip(records, ids))
    assert _infer(client, [image], k=4).as_numpy("metadata") is None  # only on request
    hits = httpx.post(f"{served[0]}/search?metadata=true&k=4", content=image, headers={**AUTH, "content-type": "image/png"}
                      ).json()["results"]
    assert [h["metadata"]["caption"] for h in hits] == [f"caption of {i}" for i in ids]


def _code(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


def test_token_is_required_but_not_for_liveness(served):
    with tritongrpc.InferenceServerClient(served[1]) as client:
        assert client.is_server_live()
        status, message = _code(lambda: client.infer("splip", [_image_input([make_png(1)])]))
        assert status == "StatusCode.UNAUTHENTICATED" and "authorization: Bearer" in message
        status, message = _code(lambda: client.get_model_metadata("splip", headers={"authorization": "Bearer nope"}))
        assert status == "StatusCode.UNAUTHENTICATED" and "invalid token" in message
        assert _code(lambda: client.is_server_ready())[0] == "StatusCode.UNAUTHENTICATED"


@pytest.mark.parametrize("case, status, words", [
    ("wrong datatype", "INVALID_ARGUMENT", "datatype FP32; it takes BYTES"),
    ("wrong shape", "INVALID_ARGUMENT", "has shape [2, 1]"),
    ("missing input", "INVALID_ARGUMENT", "send exactly one input"),
    ("unknown input", "INVALID_ARGUMENT", "unknown input 'photo'"),
    ("unknown model", "NOT_FOUND", "model 'other' is not served"),
    ("unknown version", "NOT_FOUND", "version '7' is not served"),
    ("bad k", "INVALID_ARGUMENT", "k=51 must be an integer in 1..50"),
    ("bad modality", "INVALID_ARGUMENT", "modality='text' is not supported"),
    ("bad image", "INVALID_ARGUMENT", "bad image"),
    ("oversize message", "RESOURCE_EXHAUSTED", "larger than max"),
])
def test_bad_requests_answer_the_protocol_status_naming_the_problem(client, case, status, words):
    image = _image_input([make_png(1)])
    requests = {
        "wrong datatype": lambda: _tensor_infer(client, "image", [1], "FP32", np.zeros(1, np.float32)),
        "wrong shape": lambda: _tensor_infer(client, "image", [2, 1], "BYTES", np.array([[b"a"], [b"b"]], object)),
        "missing input": lambda: client.infer("splip", [], headers=AUTH),
        "unknown input": lambda: _tensor_infer(client, "photo", [1], "BYTES", np.array([b"a"], object)),
        "unknown model": lambda: client.infer("other", [image], headers=AUTH),
        "unknown version": lambda: client.infer("splip", [image], model_version="7", headers=AUTH),
        "bad k": lambda: client.infer("splip", [image], headers=AUTH, parameters={"k": 51}),
        "bad modality": lambda: client.infer("splip", [image], headers=AUTH, parameters={"modality": "text"}),
        "bad image": lambda: _tensor_infer(client, "image", [1], "BYTES", np.array([b"not an image"], object)),
        "oversize message": lambda: _tensor_infer(client, "image", [1], "BYTES",
                                                  np.array([b"\0" * (MAX_BODY + 1)], object)),
    }
    got_status, message = _code(requests[case])
    assert got_status == f"StatusCode.{status}" and words in message, message


def _tensor_infer(client, name, shape, datatype, array):
    tensor = tritongrpc.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(array)
    return client.infer("splip", [tensor], headers=AUTH)


def test_rpcs_count_in_metrics(client, served):
    _infer(client, [make_png(2)], k=2)
    text = httpx.get(f"{served[0]}/metrics", headers=AUTH).text
    assert 'splip_http_requests_total{path="/inference.GRPCInferenceService/ModelInfer",code="200"}' in text
    assert "splip_grpc_infer_latency_seconds_count" in text


def test_reload_under_grpc_load_fails_no_request(served, tiny_encoder):
    """Clients infer over gRPC while the index gets two new versions (each adds photos next to the
    queries) and the server reloads: no request fails, each answer equals its reported version's."""
    url, address, index_dir = served
    images = [make_png(seed) for seed in range(20, 24)]
    queries = tiny_encoder.embed(images, "sketch")
    references = {1: GalleryIndex.load(index_dir)}
    answers, failures, stop = [], [], threading.Event()

    def load(position: int) -> None:
        with tritongrpc.InferenceServerClient(address) as c:
            while not stop.is_set():
                try:
                    result = _infer(c, [images[position]], k=3)
                    answers.append((position, int(result.get_response().model_version),
                                    [i.decode() for i in result.as_numpy("ids")[0]]))
                except Exception as e:  # any failure is the finding
                    failures.append(repr(e))

    threads = [threading.Thread(target=load, args=(p,)) for p in range(len(images))]
    for thread in threads:
        thread.start()
    try:
        while len(answers) < len(images):
            threading.Event().wait(0.01)
        for version in (2, 3):
            index = GalleryIndex.load(index_dir)
            near = queries + 0.05 * np.random.default_rng(version).standard_normal(queries.shape).astype(np.float32)
            index.add(near / np.linalg.norm(near, axis=1, keepdims=True), [f"v{version}-{p}" for p in range(4)])
            index.info["version"] = version  # as `index --update` numbers them
            index.save(index_dir)
            references[version] = GalleryIndex.load(index_dir)
            response = httpx.post(f"{url}/admin/reload", headers=AUTH, timeout=30)
            assert response.json()["version"] == version
            count = len(answers)
            while len(answers) < count + 2 * len(images):
                threading.Event().wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures[:3]
    assert {version for _, version, _ in answers} >= {1, 2, 3}
    for position, version, ids in answers:
        assert ids == references[version].search(queries[position:position + 1], 3)[1][0].tolist()


def test_full_queue_answers_unavailable_and_counts_as_overload(tiny_encoder, gallery_index, sketches):
    """Back-pressure as on HTTP: with the one batch worker held and a queue of 1, the other
    concurrent gRPC requests get UNAVAILABLE naming the full queue; the accepted ones answer right."""
    from concurrent.futures import ThreadPoolExecutor

    from .helpers import GatedEncoder, wait_until

    encoder = GatedEncoder(tiny_encoder)
    app = create_app(encoder, gallery_index, ServeSettings(max_batch=1, max_wait_ms=0, queue_size=1))
    attach_grpc(app, "127.0.0.1", 0)
    n_requests = 12

    def infer(position: int):
        with tritongrpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}") as c:
            try:
                return _infer(c, [sketches[position]], k=3)
            except InferenceServerException as e:
                return e

    with serving_thread(app) as (url, _), ThreadPoolExecutor(n_requests) as pool:
        futures = [pool.submit(infer, i) for i in range(n_requests)]
        wait_until(lambda: sum(f.done() for f in futures) >= n_requests - 2, timeout=30)
        encoder.gate.set()
        results = [f.result() for f in futures]
        refused = [r for r in results if isinstance(r, InferenceServerException)]
        assert len(refused) >= n_requests - 2
        assert all(r.status() == "StatusCode.UNAVAILABLE" and "search queue is full" in r.message() for r in refused)
        for position, result in enumerate(results):
            if not isinstance(result, InferenceServerException):
                _, ref_ids = reference_search(tiny_encoder, gallery_index, [sketches[position]], 3)
                assert [i.decode() for i in result.as_numpy("ids")[0]] == ref_ids[0].tolist()
        assert f"splip_overloaded_total {len(refused)}" in httpx.get(f"{url}/metrics").text
