"""The Python Encoder (PyTorch and ONNX Runtime backends) and GalleryIndex used from several
threads give the sequential results."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from splip_engine.index import GalleryIndex, synthetic_embeddings, synthetic_queries
from splip_engine.runtime import load_engine


def _batches(seed: int = 0) -> list[tuple[list[np.ndarray], str]]:
    """8 batches of 5 random images, sketch and photo alternating (so both towers run at once)."""
    rng = np.random.default_rng(seed)
    return [([rng.integers(0, 256, (24, 24 + i, 3), dtype=np.uint8) for _ in range(5)], ("sketch", "photo")[i % 2])
            for i in range(8)]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_encoder_from_threads_matches_sequential(backend, tiny_checkpoint, tiny_engine_dir):
    encoder = load_engine(tiny_checkpoint if backend == "torch" else tiny_engine_dir, backend=backend, device="cpu",
                          batch_size=4)  # batches of 5: each call runs two backend batches
    batches = _batches()
    sequential = [encoder.embed(images, modality) for images, modality in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda batch: encoder.embed(*batch), batches * 3))
    for i, result in enumerate(threaded):
        np.testing.assert_allclose(result, sequential[i % len(batches)], atol=1e-6)  # only float order may differ


def test_gallery_index_from_threads_matches_sequential():
    gallery = synthetic_embeddings(10_000, 64, 50)[0]  # ivfpq trains on >= 9984
    queries = synthetic_queries(64, 64, 50)[0]
    for kind in ("flat", "hnsw", "ivfpq"):
        index = GalleryIndex.build(gallery, [f"g{i}" for i in range(len(gallery))], kind)
        chunks = np.array_split(queries, 8)
        sequential = [index.search(q, 10) for q in chunks]
        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = list(pool.map(lambda q: index.search(q, 10), chunks * 3))
        for i, (scores, ids) in enumerate(threaded):
            np.testing.assert_array_equal(ids, sequential[i % len(chunks)][1])
            np.testing.assert_allclose(scores, sequential[i % len(chunks)][0])
