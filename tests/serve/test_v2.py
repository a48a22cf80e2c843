"""The Open Inference Protocol (KServe v2) on a real server on 127.0.0.1, driven by the real
`tritonclient.http`: health, metadata and infer (binary and JSON tensors, images and pixels) give
the ids and scores of POST /search and of the Python API; malformed requests are 400 with the
protocol's {"error": ...} body and the server keeps answering."""
from __future__ import annotations

import gzip
import json
import re
import struct

import httpx
import numpy as np
import pytest

from splip_engine.serve import ServeSettings, create_app

from .helpers import reference_search, running_server, wait_until

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (the dev extra) is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_K, MAX_BATCH = 50, 8
TIMEOUT = httpx.Timeout(20.0)


@pytest.fixture(scope="module")
def url(tiny_encoder, gallery_index):
    settings = ServeSettings(max_batch=MAX_BATCH, max_wait_ms=20, max_k=MAX_K, max_body_bytes=256 * 1024)
    with running_server(create_app(tiny_encoder, gallery_index, settings)) as base:
        yield base


@pytest.fixture
def client(url):
    with httpclient.InferenceServerClient(url.removeprefix("http://")) as triton:
        wait_until(triton.is_server_ready)  # ready once the warm-up batch has run
        yield triton


def _image_input(pngs: list[bytes], binary: bool = True):
    tensor = httpclient.InferInput("image", [len(pngs)], "BYTES")
    tensor.set_data_from_numpy(np.array(pngs, dtype=object), binary_data=binary)
    return tensor


def _ids(result, row: int | None = None) -> list:
    """Output `ids` as str (tritonclient gives bytes from binary tensors, str from JSON ones)."""
    rows = [[i.decode() if isinstance(i, bytes) else i for i in r] for r in result.as_numpy("ids")]
    return rows if row is None else rows[row]


def _outputs(binary: bool):
    return [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("embeddings", "ids", "scores")]


def test_health_and_metadata_through_tritonclient(client, tiny_encoder):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("splip")
    meta = client.get_model_metadata("splip")
    size, dim = tiny_encoder.image_size, tiny_encoder.embedding_dim
    assert meta["name"] == "splip" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                              {"name": "pixels", "datatype": "FP32", "shape": [-1, 3, size, size]}]
    assert meta["outputs"] == [{"name": "embeddings", "datatype": "FP32", "shape": [-1, dim]},
                               {"name": "ids", "datatype": "BYTES", "shape": [-1, -1]},
                               {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
                               {"name": "metadata", "datatype": "BYTES", "shape": [-1, -1]}]
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    with pytest.raises(InferenceServerException, match="model 'other' is not served here"):
        client.get_model_metadata("other")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_search_and_the_python_api(client, url, tiny_encoder, gallery_index, sketches, binary):
    pngs, k = sketches[:3], 7
    if binary:
        inputs = [_image_input(pngs)]
    else:  # JSON tensors cannot carry PNG bytes (not UTF-8): send the preprocessed pixels instead
        from splip_engine.data.transforms import preprocess

        pixels = np.stack([preprocess(png, "sketch", tiny_encoder.spec) for png in pngs])  # (3, 3, S, S)
        inputs = [httpclient.InferInput("pixels", list(pixels.shape), "FP32")]
        inputs[0].set_data_from_numpy(pixels, binary_data=False)
    result = client.infer("splip", inputs, outputs=_outputs(binary), parameters={"k": k}, request_id="req-1")
    ids = _ids(result)  # (3, k) str
    scores, embeddings = result.as_numpy("scores"), result.as_numpy("embeddings")  # (3, k), (3, D)
    assert result.get_response()["id"] == "req-1" and result.get_response()["model_version"] == "1"
    ref_scores, ref_ids = reference_search(tiny_encoder, gallery_index, pngs, k)
    assert ids == ref_ids.tolist()
    # batched vs one-by-one embedding: float32 summation order only
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(embeddings, tiny_encoder.embed(pngs, "sketch"), atol=1e-5)
    for row, png in enumerate(pngs):
        search = httpx.post(f"{url}/search", params={"k": k}, content=png, headers={"Content-Type": "image/png"},
                            timeout=TIMEOUT).json()
        assert [hit["id"] for hit in search["results"]] == ids[row]
        np.testing.assert_allclose([hit["score"] for hit in search["results"]], scores[row], atol=1e-5)


def test_infer_defaults_photo_modality_gzip_and_k_beyond_the_gallery(client, tiny_encoder, gallery_index, sketches):
    result = client.infer("splip", [_image_input(sketches[3:4])], parameters={"modality": "photo"},
                          request_compression_algorithm="gzip")
    assert result.as_numpy("ids").shape == (1, 10)  # default k, every output, binary
    assert _ids(result, 0) == reference_search(
        tiny_encoder, gallery_index, sketches[3:4], 10, "photo")[1][0].tolist()
    whole = client.infer("splip", [_image_input(sketches[:1])], parameters={"k": MAX_K},
                         outputs=[httpclient.InferRequestedOutput("ids")], model_version="1")
    assert whole.as_numpy("ids").shape == (1, MAX_K) and whole.as_numpy("scores") is None  # only what was asked


def _raw_infer(url: str, request: dict, binary: bytes = b"", **headers) -> httpx.Response:
    body = json.dumps(request).encode()
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(body))
    return httpx.post(f"{url}/v2/models/splip/infer", content=body + binary, headers=headers, timeout=TIMEOUT)


def _bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def test_malformed_requests_are_400_with_the_protocol_error_and_the_server_keeps_serving(
        client, url, tiny_encoder, gallery_index, sketches):
    size = tiny_encoder.image_size
    png = sketches[0]
    blob = _bytes_tensor(png)
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(blob)}}
    cases = {
        "wrong dtype": ({"inputs": [{**image, "datatype": "FP32"}]}, blob,
                        "input 'image' has datatype FP32; it takes BYTES"),
        "wrong shape": ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, size + 1, size],
                                     "data": [0.0] * (3 * size * (size + 1))}]}, b"",
                        rf"input 'pixels' has shape \[1, 3, {size + 1}, {size}\]; this engine takes \[N, 3, {size}, {size}\]"),
        "shape vs data": ({"inputs": [{**image, "shape": [2]}]}, blob, r"has shape \[2\] but holds 1 elements"),
        "missing input": ({"inputs": []}, b"", "send exactly one input, 'image'"),
        "unknown input": ({"inputs": [{**image, "name": "sketch"}]}, blob, "unknown input 'sketch'"),
        "k too large": ({"inputs": [image], "parameters": {"k": MAX_K + 1}}, blob,
                        rf"parameter k={MAX_K + 1} must be an integer in 1\.\.{MAX_K}"),
        "k not an int": ({"inputs": [image], "parameters": {"k": "5"}}, blob, r"parameter k='5' must be an integer"),
        "bad modality": ({"inputs": [image], "parameters": {"modality": "painting"}}, blob,
                         "modality='painting' is not supported"),
        "undecodable bytes": ({"inputs": [{**image, "parameters": {"binary_data_size": 16}}]},
                              _bytes_tensor(b"not an image"), "bad image: <bytes>: a text file, not an image"),
        "one bad of two": ({"inputs": [{**image, "shape": [2], "parameters": {"binary_data_size": len(blob) + 8}}]},
                           blob + _bytes_tensor(b"junk"), "bad image: element 1: <bytes>"),
        "too many images": ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [MAX_BATCH + 1],
                                         "data": ["<svg/>"] * (MAX_BATCH + 1)}]}, b"",
                            rf"holds {MAX_BATCH + 1} images; send 1\.\.{MAX_BATCH} per request"),
        "binary overrun": ({"inputs": [{**image, "parameters": {"binary_data_size": len(blob) + 1}}]}, blob,
                           "does not fit the"),
        "leftover bytes": ({"inputs": [image]}, blob + b"xx", "2 bytes after the JSON header belong to no input"),
        "non-finite pixels": ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, size, size],
                                           "data": [float("nan")] * (3 * size * size)}]}, b"",
                              "holds NaN or infinite values"),
        "unknown output": ({"inputs": [image], "outputs": [{"name": "labels"}]}, blob, "unknown output 'labels'"),
    }
    for name, (request, binary, message) in cases.items():
        response = _raw_infer(url, request, binary)
        assert response.status_code == 400, (name, response.status_code, response.text)
        assert set(response.json()) == {"error"}, name
        assert re.search(message, response.json()["error"]), (name, response.json())
    not_json = httpx.post(f"{url}/v2/models/splip/infer", content=b"{not json", timeout=TIMEOUT)
    assert not_json.status_code == 400 and not_json.json()["error"].startswith("the request is not JSON")
    bad_header = httpx.post(f"{url}/v2/models/splip/infer", content=b"{}",
                            headers={"Inference-Header-Content-Length": "99"}, timeout=TIMEOUT)
    assert bad_header.status_code == 400 and "Inference-Header-Content-Length '99'" in bad_header.json()["error"]
    bomb = gzip.compress(bytes(400 * 1024))  # inflates past max_body_bytes
    inflated = httpx.post(f"{url}/v2/models/splip/infer", content=bomb, headers={"Content-Encoding": "gzip"},
                          timeout=TIMEOUT)
    assert inflated.status_code == 413 and "(after decompression)" in inflated.json()["error"]
    stale = httpx.post(f"{url}/v2/models/splip/versions/7/infer", content=b"{}", timeout=TIMEOUT)
    assert stale.status_code == 404 and "version '7' is not served; the served version is '1'" in stale.json()["error"]
    with pytest.raises(InferenceServerException, match="parameter k=51 must be an integer"):  # tritonclient sees it too
        client.infer("splip", [_image_input([png])], parameters={"k": MAX_K + 1})
    result = client.infer("splip", [_image_input([png])], parameters={"k": 3})  # still serving, correctly
    assert _ids(result, 0) == reference_search(
        tiny_encoder, gallery_index, [png], 3)[1][0].tolist()
    assert client.get_model_metadata("splip")["parameters"]["index_size"] == len(gallery_index)


def test_svg_and_quickdraw_images_as_json_strings(client, tiny_encoder, gallery_index):
    from data.imagefactory import STROKES, quickdraw_line, strokes_svg

    files = [strokes_svg(), quickdraw_line(STROKES)]  # UTF-8 text: a JSON BYTES tensor can carry them
    result = client.infer("splip", [_image_input(files, binary=False)], outputs=_outputs(False), parameters={"k": 4})
    assert _ids(result) == reference_search(tiny_encoder, gallery_index, files, 4)[1].tolist()
