"""Synthetic embeddings: seeded, unit-norm, clustered, and sketch queries shifted off the gallery."""
from __future__ import annotations

import numpy as np

from splip_engine.index import synthetic_embeddings, synthetic_queries


def test_synthetic_data_is_seeded_unit_norm_and_in_the_requested_dtype():
    a, labels_a = synthetic_embeddings(300, 32, n_clusters=10, seed=3, dtype=np.float16)
    b, labels_b = synthetic_embeddings(300, 32, n_clusters=10, seed=3, dtype=np.float16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels_a, labels_b)
    other_seed = synthetic_embeddings(300, 32, n_clusters=10, seed=4, dtype=np.float16)[0]
    assert a.dtype == np.float16 and not np.array_equal(a, other_seed)
    np.testing.assert_allclose(np.linalg.norm(a.astype(np.float32), axis=1), 1, atol=1e-3)
    queries, _ = synthetic_queries(50, 32, n_clusters=10, seed=3)
    assert queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-5)


def test_sketch_queries_are_near_their_class_but_off_the_photo_distribution():
    photos, photo_labels = synthetic_embeddings(2000, 64, n_clusters=20)
    sketches, sketch_labels = synthetic_queries(200, 64, n_clusters=20)
    scores = sketches @ photos.T  # (Q, N)
    same = sketch_labels[:, None] == photo_labels[None, :]
    assert scores[same].mean() > scores[~same].mean() + 0.2  # clustered by class
    photo_photo = photos[:200] @ photos.T
    same_photo = photo_labels[:200, None] == photo_labels[None, :]
    assert photo_photo[same_photo].mean() > scores[same].mean() + 0.05  # the modality gap
