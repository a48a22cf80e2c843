"""MicroBatcher: one encoder call + one search per batch, same answers as the Python API, a
bounded queue that refuses with Overloaded, and a clean close."""
from __future__ import annotations

import numpy as np
import pytest

from splip_engine.data.transforms import preprocess
from splip_engine.errors import SpLIPError
from splip_engine.serve import MicroBatcher, Overloaded, ServiceUnavailable

from .helpers import GatedEncoder, reference_search, wait_until


class _CountingEncoder(GatedEncoder):
    """A gated encoder that also records the batch size of every embed_pixels call."""

    def __init__(self, encoder):
        super().__init__(encoder)
        self.calls: list[int] = []

    def embed_pixels(self, pixels, modality):
        self.calls.append(len(pixels))
        return super().embed_pixels(pixels, modality)


class _CountingIndex:
    """Wraps a GalleryIndex and records (number of queries, k) of every search call."""

    def __init__(self, index):
        self._index = index
        self.calls: list[tuple[int, int]] = []

    def search(self, queries, k):
        self.calls.append((len(queries), k))
        return self._index.search(queries, k)

    def __getattr__(self, name):
        return getattr(self._index, name)


def _pixels(encoder, png: bytes, modality: str = "sketch") -> np.ndarray:
    return preprocess(png, modality, encoder.spec)[None]  # (1, 3, S, S) float32


def test_queued_requests_run_as_one_batch_with_python_api_answers(tiny_encoder, gallery_index, sketches):
    encoder, index = _CountingEncoder(tiny_encoder), _CountingIndex(gallery_index)
    ks = [1, 5, 10, 3, 7, 10, 2, 4]
    with MicroBatcher(encoder, index, max_batch=len(ks), max_wait_ms=5000, queue_size=16) as batcher:
        futures = [batcher.submit(_pixels(tiny_encoder, png), "sketch", k) for png, k in zip(sketches, ks)]
        encoder.gate.set()
        answers = [f.result(timeout=20) for f in futures]
    assert encoder.calls == [len(ks)] and index.calls == [(len(ks), max(ks))]  # one call each for all
    scores, ids = reference_search(tiny_encoder, gallery_index, sketches[:len(ks)], k=10)
    for row, (k, answer) in enumerate(zip(ks, answers)):
        assert list(answer.ids[0]) == list(ids[row, :k]) and answer.batch_size == len(ks)
        # batched vs one-by-one embedding: float32 summation order only
        np.testing.assert_allclose(answer.scores[0], scores[row, :k], atol=1e-5)


def test_mixed_modalities_in_one_batch_use_each_modality(tiny_encoder, gallery_index, sketches):
    encoder = _CountingEncoder(tiny_encoder)
    modalities = ["sketch", "photo", "sketch", "photo"]
    with MicroBatcher(encoder, gallery_index, max_batch=len(modalities), max_wait_ms=5000) as batcher:
        futures = [batcher.submit(_pixels(tiny_encoder, png, m), m, 5) for png, m in zip(sketches, modalities)]
        encoder.gate.set()
        answers = [f.result(timeout=20) for f in futures]
    assert encoder.calls == [2, 2]  # one call per modality
    for png, modality, answer in zip(sketches, modalities, answers):
        _, ids = reference_search(tiny_encoder, gallery_index, [png], k=5, modality=modality)
        assert list(answer.ids[0]) == list(ids[0])


def test_full_queue_raises_overloaded_and_recovers(tiny_encoder, gallery_index, sketches):
    encoder = GatedEncoder(tiny_encoder)
    pixels = _pixels(tiny_encoder, sketches[0])
    with MicroBatcher(encoder, gallery_index, max_batch=1, max_wait_ms=0, queue_size=2) as batcher:
        running = batcher.submit(pixels, "sketch", 3)
        wait_until(lambda: batcher.depth() == 0)  # the worker took `running` and blocks on the gate
        queued = [batcher.submit(pixels, "sketch", 3) for _ in range(2)]
        message = r"search queue is full \(2 requests waiting, the queue_size limit\); retry shortly"
        with pytest.raises(Overloaded, match=message):
            batcher.raise_if_full()
        with pytest.raises(Overloaded, match=message):
            batcher.submit(pixels, "sketch", 3)
        encoder.gate.set()
        expected = reference_search(tiny_encoder, gallery_index, [sketches[0]], k=3)[1][0]
        for future in [running, *queued]:
            assert list(future.result(timeout=20).ids[0]) == list(expected)
        assert list(batcher.submit(pixels, "sketch", 3).result(timeout=20).ids[0]) == list(expected)


def test_encoder_error_fails_its_batch_not_the_worker(tiny_encoder, gallery_index, sketches):
    pixels = _pixels(tiny_encoder, sketches[0])
    with MicroBatcher(tiny_encoder, gallery_index, max_batch=4, max_wait_ms=0) as batcher:
        bad = batcher.submit(np.zeros((1, 3, 5, 5), np.float32), "sketch", 3)  # wrong image size
        with pytest.raises(SpLIPError, match=r"pixels of shape \(1, 3, 5, 5\): this engine takes \(N, 3, 32, 32\)"):
            bad.result(timeout=20)
        assert batcher.submit(pixels, "sketch", 3).result(timeout=20).ids.shape == (1, 3)


def test_close_runs_queued_requests_then_refuses(tiny_encoder, gallery_index, sketches):
    batcher = MicroBatcher(tiny_encoder, gallery_index, max_batch=2, max_wait_ms=50)
    futures = [batcher.submit(_pixels(tiny_encoder, png), "sketch", 2) for png in sketches[:5]]
    batcher.close()
    assert all(f.result(timeout=0).ids.shape == (1, 2) for f in futures)
    assert not batcher._thread.is_alive()
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        batcher.submit(_pixels(tiny_encoder, sketches[0]), "sketch", 2)


def test_a_request_of_several_images_is_never_split_and_a_swap_applies_from_the_next_batch(
        tiny_encoder, gallery_index, sketches):
    encoder = _CountingEncoder(tiny_encoder)
    first, second = _CountingIndex(gallery_index), _CountingIndex(gallery_index)
    three = np.concatenate([_pixels(tiny_encoder, png) for png in sketches[:3]])  # (3, 3, S, S)
    with MicroBatcher(encoder, first, max_batch=4, max_wait_ms=50, queue_size=8) as batcher:
        futures = [batcher.submit(three, "sketch", 5) for _ in range(3)]  # 3 + 3 > 4: one request per batch
        wait_until(lambda: len(encoder.calls) == 1)  # the first batch runs (blocked on the gate) on `first`
        assert batcher.swap_index(second) is first
        encoder.gate.set()
        answers = [f.result(timeout=20) for f in futures]
    assert encoder.calls == [3, 3, 3]
    assert [a.index for a in answers] == [first, second, second] and [a.batch_size for a in answers] == [3, 3, 3]
    assert first.calls == [(3, 5)] and second.calls == [(3, 5), (3, 5)]
    _, ids = reference_search(tiny_encoder, gallery_index, sketches[:3], k=5)
    for answer in answers:
        assert answer.ids.tolist() == ids.tolist() and answer.embeddings.shape == (3, tiny_encoder.embedding_dim)
