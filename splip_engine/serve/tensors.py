"""The Open Inference Protocol (KServe v2) request and response bodies of the `splip` model, with
the binary tensor data extension as tritonclient uses it.

Request: JSON `{"id"?, "parameters"?: {"k", "modality", "binary_data_output"}, "inputs": [one of
image (BYTES [N], encoded image files) or pixels (FP32 [N, 3, S, S], preprocessed)], "outputs"?:
[{"name", "parameters"?: {"binary_data"}}]}`. With the extension, the HTTP header
`Inference-Header-Content-Length: L` says the JSON is the body's first L bytes; each input whose
parameters hold `binary_data_size` takes its bytes from what follows, in input order (BYTES
elements as a 4-byte little-endian length + the bytes; FP32 as little-endian float32, row-major).
Response: `{"model_name", "model_version", "id"?, "parameters", "outputs": [embeddings FP32 [N, D],
ids BYTES [N, k], scores FP32 [N, k], and with parameter `metadata: true` (or when asked for by name)
metadata BYTES [N, k]: each hit's stored record as JSON text {"id", "path", "key", "caption",
"json"}, "" for no result]}`, each output in binary after the JSON (with
`binary_data_size`) when asked for. A slot with no result (k above what the index found) has
id "" and score -inf (null in JSON, which has no infinity).
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from splip_engine.config import MODALITIES
from splip_engine.serve.errors import RequestError

MODEL_NAME = "splip"
INPUTS = ("image", "pixels")
OUTPUTS = ("embeddings", "ids", "scores", "metadata")  # metadata: only when asked for
DEFAULT_K = 10
_LENGTH = struct.Struct("<I")  # BYTES element length prefix


@dataclass
class InferRequest:
    """A checked infer request: exactly one of `images` / `pixels` is set."""

    request_id: str | None
    images: list[bytes] | None  # N encoded image files
    pixels: np.ndarray | None  # (N, 3, S, S) float32
    k: int
    modality: str
    outputs: dict[str, bool]  # output name -> in binary

    @property
    def count(self) -> int:
        return len(self.images) if self.images is not None else len(self.pixels)

    @property
    def wants_metadata(self) -> bool:
        return "metadata" in self.outputs


def model_metadata(image_size: int, embedding_dim: int, version: int, parameters: dict[str, Any]) -> dict[str, Any]:
    """GET /v2/models/splip: the model's versions and tensors (-1 = any size)."""
    def tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": shape}

    return {"name": MODEL_NAME, "versions": [str(version)], "platform": "splip_engine",
            "inputs": [tensor("image", "BYTES", [-1]), tensor("pixels", "FP32", [-1, 3, image_size, image_size])],
            "outputs": [tensor("embeddings", "FP32", [-1, embedding_dim]), tensor("ids", "BYTES", [-1, -1]),
                        tensor("scores", "FP32", [-1, -1]), tensor("metadata", "BYTES", [-1, -1])],
            "parameters": parameters}


def parse_infer_request(body: bytes, header_length: str | None, image_size: int, max_batch: int,
                        max_k: int) -> InferRequest:
    """Check and decode an infer request body; RequestError(400) naming what is wrong."""
    header, binary = _split(body, header_length)
    try:
        request = json.loads(header)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(f"the request is not JSON ({e})") from e
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise _bad('the request must be a JSON object with an "inputs" list')
    parameters = _object(request.get("parameters", {}), "request parameters")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad(f'"id" must be a string, got {request_id!r}')
    return check_infer_request(request_id, parameters, _inputs(request["inputs"], binary), request.get("outputs"),
                               image_size, max_batch, max_k)


def check_infer_request(request_id: str | None, parameters: dict[str, Any],
                        tensors: dict[str, tuple[str, list[int], Any]], outputs: Any, image_size: int,
                        max_batch: int, max_k: int) -> InferRequest:
    """The checks every transport shares: `tensors` is name -> (datatype, shape, data: the raw
    bytes, or a list of elements), `outputs` the requested [{"name", "parameters"?}] or None."""
    if len(tensors) != 1:
        given = sorted(tensors) or "none"
        raise _bad(f"send exactly one input, 'image' (BYTES [N]) or 'pixels' (FP32 [N, 3, {image_size}, "
                   f"{image_size}]); got {given}")
    (name, (datatype, shape, data)), = tensors.items()
    images = _images(datatype, shape, data, max_batch) if name == "image" else None
    pixels = _pixels(datatype, shape, data, image_size, max_batch) if name == "pixels" else None
    return InferRequest(request_id, images, pixels, _k(parameters.get("k"), max_k),
                        _modality(parameters.get("modality")), _outputs(outputs, parameters))


def output_tensors(embeddings: np.ndarray, ids: np.ndarray, scores: np.ndarray,
                   metadata: np.ndarray | None) -> dict[str, tuple[str, np.ndarray]]:
    """Output name -> (datatype, array) of an answer; metadata (N, k) object of JSON text or None."""
    return {"embeddings": ("FP32", embeddings), "ids": ("BYTES", ids), "scores": ("FP32", scores),
            "metadata": ("BYTES", metadata)}


def encode_infer_response(request: InferRequest, version: int, embeddings: np.ndarray, ids: np.ndarray,
                          scores: np.ndarray, metadata: np.ndarray | None = None) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is all JSON) of an infer response;
    embeddings (N, D) float32, ids (N, k) object (None = no result), scores (N, k) float32,
    metadata (N, k) object (each hit's record as JSON text) when the request asked for it."""
    tensors = output_tensors(embeddings, ids, scores, metadata)
    outputs, blobs = [], []
    for name, binary in request.outputs.items():
        datatype, array = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = tensor_bytes(datatype, array)
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = ([("" if v is None else v) for v in array.ravel()] if datatype == "BYTES" else
                              [v if math.isfinite(v) else None for v in array.ravel().tolist()])
        outputs.append(output)
    response = {"model_name": MODEL_NAME, "model_version": str(version),
                **({"id": request.request_id} if request.request_id is not None else {}),
                "parameters": {"k": request.k, "modality": request.modality}, "outputs": outputs}
    header = json.dumps(response, separators=(",", ":")).encode()
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)


# ------------------------------------------------------------------ parsing helpers
def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tail) of the body, per Inference-Header-Content-Length."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise _bad(f"Inference-Header-Content-Length {header_length!r} is not a byte count within the "
                   f"{len(body)}-byte body")
    length = int(header_length)
    return body[:length], memoryview(body)[length:]


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _inputs(inputs: list[Any], binary: memoryview) -> dict[str, tuple[str, list[int], Any]]:
    """name -> (datatype, shape, data: bytes from the binary tail, or the JSON data) of every input."""
    out, offset = {}, 0
    for tensor in inputs:
        tensor = _object(tensor, "each input")
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        check_input(name, datatype, shape, out)
        size = _object(tensor.get("parameters", {}), f"input {name!r} parameters").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise _bad(f"input {name!r} binary_data_size={size!r} does not fit the {len(binary)} bytes "
                           "after the JSON header")
            data, offset = bytes(binary[offset:offset + size]), offset + size
        elif "data" in tensor:
            data = tensor["data"]
        else:
            raise _bad(f"input {name!r} has no \"data\" and no binary_data_size")
        out[name] = (datatype, shape, data)
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes after the JSON header belong to no input's binary_data_size")
    return out


def check_input(name: Any, datatype: Any, shape: Any, seen: dict[str, Any]) -> None:
    """RequestError(400) unless `name` is a model input not in `seen`, with a datatype and a shape."""
    if name not in INPUTS:
        raise _bad(f"unknown input {name!r}; the model takes 'image' (BYTES) or 'pixels' (FP32)")
    if name in seen:
        raise _bad(f"input {name!r} is given twice")
    if not isinstance(datatype, str) or not datatype:
        raise _bad(f"input {name!r} needs a \"datatype\" string")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise _bad(f"input {name!r} has shape {shape!r}; a shape is a list of non-negative integers")


def _count(name: str, shape: list[int], max_batch: int) -> int:
    if shape[0] < 1 or shape[0] > max_batch:
        raise _bad(f"input {name!r} holds {shape[0]} images; send 1..{max_batch} per request (the server's max_batch)")
    return shape[0]


def _images(datatype: str, shape: list[int], data: Any, max_batch: int) -> list[bytes]:
    """The N encoded files of input `image` (BYTES [N])."""
    if datatype != "BYTES":
        raise _bad(f"input 'image' has datatype {datatype}; it takes BYTES (encoded image files)")
    if len(shape) != 1:
        raise _bad(f"input 'image' has shape {shape}; it takes [N] (one encoded file per element)")
    count = _count("image", shape, max_batch)
    if isinstance(data, bytes):
        elements, offset = [], 0
        while offset < len(data):
            if offset + _LENGTH.size > len(data):
                raise _bad("input 'image' binary data ends inside an element's 4-byte length")
            (length,), offset = _LENGTH.unpack_from(data, offset), offset + _LENGTH.size
            if offset + length > len(data):
                raise _bad(f"input 'image' element {len(elements)} says {length} bytes, "
                           f"{len(data) - offset} are left")
            elements.append(data[offset:offset + length])
            offset += length
    else:
        elements = [e.encode("utf-8") if isinstance(e, str) else e for e in _flatten(data)]
        if not all(isinstance(e, bytes) for e in elements):
            raise _bad("input 'image' JSON data must be strings (use the binary extension for binary files)")
    if len(elements) != count:
        raise _bad(f"input 'image' has shape [{count}] but holds {len(elements)} elements")
    return elements


def _pixels(datatype: str, shape: list[int], data: Any, image_size: int, max_batch: int) -> np.ndarray:
    """Input `pixels` as (N, 3, S, S) float32."""
    expected = [3, image_size, image_size]
    if datatype != "FP32":
        raise _bad(f"input 'pixels' has datatype {datatype}; it takes FP32")
    if len(shape) != 4 or shape[1:] != expected:
        raise _bad(f"input 'pixels' has shape {shape}; this engine takes [N, 3, {image_size}, {image_size}]")
    count = _count("pixels", shape, max_batch)
    if isinstance(data, bytes):
        if len(data) != count * 3 * image_size * image_size * 4:
            raise _bad(f"input 'pixels' has {len(data)} bytes of binary data; shape {shape} of FP32 needs "
                       f"{count * 3 * image_size * image_size * 4}")
        pixels = np.frombuffer(data, dtype="<f4").astype(np.float32)
    else:
        try:
            pixels = np.asarray(data, dtype=np.float32).reshape(-1)
        except (ValueError, TypeError) as e:
            raise _bad(f"input 'pixels' JSON data is not a (nested) list of numbers ({e})") from e
        if pixels.size != count * 3 * image_size * image_size:
            raise _bad(f"input 'pixels' holds {pixels.size} numbers; shape {shape} needs "
                       f"{count * 3 * image_size * image_size}")
    pixels = pixels.reshape(count, *expected)  # (N, 3, S, S)
    if not np.isfinite(pixels).all():
        raise _bad("input 'pixels' holds NaN or infinite values")
    return pixels


def _flatten(data: Any) -> list[Any]:
    """Row-major elements of a flat or nested JSON list."""
    if not isinstance(data, list):
        raise _bad(f"tensor data must be a JSON list, got {type(data).__name__}")
    out, stack = [], [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _k(value: Any, max_k: int) -> int:
    if value is None:
        return min(DEFAULT_K, max_k)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_k:
        raise _bad(f"parameter k={value!r} must be an integer in 1..{max_k} (the server's max_k)")
    return value


def _modality(value: Any) -> str:
    if value is None:
        return "sketch"
    if value not in MODALITIES:
        raise _bad(f"parameter modality={value!r} is not supported; pass one of {list(MODALITIES)}")
    return value


def _outputs(requested: Any, parameters: dict[str, Any]) -> dict[str, bool]:
    """Output name -> binary, in response order: those asked for, else all (binary per binary_data_output)."""
    binary_default = bool(parameters.get("binary_data_output", False))
    if requested is None:
        names = OUTPUTS if _flag(parameters.get("metadata"), "metadata") else OUTPUTS[:-1]
        return dict.fromkeys(names, binary_default)
    if not isinstance(requested, list) or not requested:
        raise _bad('"outputs" must be a non-empty list of {"name": ...}')
    out = {}
    for output in requested:
        output = _object(output, "each output")
        name = output.get("name")
        if name not in OUTPUTS:
            raise _bad(f"unknown output {name!r}; the model gives {list(OUTPUTS)}")
        binary = _object(output.get("parameters", {}), f"output {name!r} parameters").get("binary_data")
        out[name] = bool(binary_default if binary is None else binary)
    if _flag(parameters.get("metadata"), "metadata"):
        out.setdefault("metadata", binary_default)
    return out


def _flag(value: Any, name: str) -> bool:
    """A boolean parameter: true / false (or the strings "true" / "false"), absent = false."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _bad(f"parameter {name}={value!r} must be true or false")


def tensor_bytes(datatype: str, array: np.ndarray) -> bytes:
    """An output tensor's raw bytes: FP32 little-endian row-major; BYTES each element as <u32
    length> + UTF-8 bytes (the binary extension's and gRPC raw_output_contents' layout)."""
    if datatype != "BYTES":
        return np.ascontiguousarray(array, "<f4").tobytes()
    parts = []
    for value in array.ravel():
        encoded = b"" if value is None else str(value).encode("utf-8")
        parts += [_LENGTH.pack(len(encoded)), encoded]
    return b"".join(parts)
