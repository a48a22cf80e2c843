"""Exact top-k by NumPy: the independent reference every index test compares with."""
from __future__ import annotations

import numpy as np


def numpy_topk(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (Q, k) float32 descending and gallery rows (Q, k) int64 of queries (Q, D) against
    gallery (N, D) (any float dtype, scored in float32); ties: the lower row first (stable sort)."""
    scores = queries.astype(np.float32) @ gallery.astype(np.float32).T  # (Q, N)
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows
