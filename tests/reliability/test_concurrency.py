"""The Python Encoder and GalleryIndex used from several threads give the sequential results."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from splip_engine import SpLIPConfig, build_model, save_checkpoint
from splip_engine.index import GalleryIndex, synthetic_embeddings, synthetic_queries
from splip_engine.runtime import load_engine


def test_encoder_from_threads_matches_sequential(tmp_path):
    save_checkpoint(build_model(SpLIPConfig(clip_model="tiny", pretrained="")), tmp_path / "ckpt")
    encoder = load_engine(tmp_path / "ckpt", backend="torch", batch_size=4)
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(5)] for _ in range(8)]
    sequential = [encoder.embed(b, "sketch") for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda b: encoder.embed(b, "sketch"), batches))
    for a, b in zip(sequential, threaded):
        np.testing.assert_allclose(a, b, atol=1e-6)  # same inputs, same weights: only float order may differ


def test_gallery_index_from_threads_matches_sequential():
    gallery = synthetic_embeddings(5000, 64, 50)[0]
    queries = synthetic_queries(64, 64, 50)[0]
    for kind in ("flat", "hnsw"):
        index = GalleryIndex.build(gallery, [f"g{i}" for i in range(len(gallery))], kind)
        chunks = np.array_split(queries, 8)
        sequential = [index.search(q, 10) for q in chunks]
        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = list(pool.map(lambda q: index.search(q, 10), chunks))
        for (s1, i1), (s2, i2) in zip(sequential, threaded):
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_allclose(s1, s2)
