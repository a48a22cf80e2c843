"""What the Open Inference Protocol's HTTP (v2.py) and gRPC (grpc_service.py) transports share:
the model check, the model's metadata, and `run_infer`, an infer request of model `splip` through
the service (decode pool, micro-batcher, hit metadata)."""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import numpy as np

from splip_engine._version import __version__
from splip_engine.serve.batcher import BatchAnswer
from splip_engine.serve.errors import RequestError
from splip_engine.serve.service import SearchService, index_version
from splip_engine.serve.tensors import MODEL_NAME, InferRequest, model_metadata

SERVER_NAME = "splip-engine"
SERVER_VERSION = __version__


def check_model(service: SearchService, name: str, version: str | None) -> None:
    """RequestError(404) unless `name` is the served model and `version` (None / "": any) its version."""
    if name != MODEL_NAME:
        raise RequestError(404, f"model {name!r} is not served here; this server serves {MODEL_NAME!r}")
    serving = str(index_version(service.index))
    if version and version != serving:
        raise RequestError(404, f"model {MODEL_NAME!r} version {version!r} is not served; the served version "
                                f"is {serving!r} (omit the version to use it)")


def describe_model(service: SearchService) -> dict[str, Any]:
    """The model's metadata: versions, tensors, and the limits a client needs."""
    index, settings = service.index, service.settings
    return model_metadata(service.encoder.image_size, service.encoder.embedding_dim, index_version(index),
                          {"index_kind": getattr(index, "kind", None), "index_size": len(index),
                           "max_k": settings.max_k, "max_batch": settings.max_batch,
                           "modalities": ["sketch", "photo"], "default_k": min(10, settings.max_k),
                           "metadata": service.metadata is not None})


class InferAnswer(NamedTuple):
    answer: BatchAnswer
    metadata: np.ndarray | None  # (N, k) object: each hit's record as JSON text, "" for no result


async def run_infer(service: SearchService, request: InferRequest, facts: dict[str, Any],
                    disconnected: Callable[[], Awaitable[bool]] | None = None) -> InferAnswer:
    """Decode (for `image`), batch, search, and look up the hits' metadata when asked for; fills the
    access-log `facts` (images, batch_size, index_version). `disconnected`: see SearchService.preprocess."""
    if request.wants_metadata:
        service.check_metadata()  # refuse before spending a batch on it
    facts["images"] = request.count
    pixels = request.pixels if request.pixels is not None else await service.preprocess(
        request.images, request.modality, disconnected)
    answer = await service.search(pixels, request.modality, request.k)
    facts.update(batch_size=answer.batch_size, index_version=index_version(answer.index))
    if not request.wants_metadata:
        return InferAnswer(answer, None)
    texts = ["" if r is None else json.dumps(r, separators=(",", ":")) for r in service.hit_records(answer.ids)]
    return InferAnswer(answer, np.array(texts, dtype=object).reshape(answer.ids.shape))
