"""Seeded synthetic embeddings shaped like a SpLIP gallery and its sketch queries, for tests and
benchmarks of the index (recall of approximate search is only meaningful on clustered data).

The world (fixed by `seed`): `n_clusters` class centres grouped under super-classes (related
classes lie close, as in CLIP space), a mean direction shared by every embedding (CLIP embeddings
fill a narrow cone) and a sketch modality offset (the modality gap). Photos are
`normalise(mean + centre + noise)`; sketch queries are `normalise(mean + centre + offset + noise)`,
so queries do not come from the gallery's distribution: the cross-modal case ENGINE.md asks recall
to be measured on.
"""
from __future__ import annotations

import numpy as np

_SUPER_SIZE = 10  # classes per super-class
_CHUNK = 65536  # rows generated at a time, bounding float32 temporaries at 1M x 512


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _world(dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres (C, D), mean direction (D,), sketch offset (D,)) float32, fixed by `seed`."""
    rng = np.random.default_rng([seed, 0])
    supers = _unit(rng.standard_normal((-(-n_clusters // _SUPER_SIZE), dim), dtype=np.float32))
    own = _unit(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    centres = _unit(supers[np.arange(n_clusters) // _SUPER_SIZE] + own)  # (C, D)
    mean = _unit(rng.standard_normal(dim, dtype=np.float32))  # (D,)
    offset = _unit(rng.standard_normal(dim, dtype=np.float32))  # (D,)
    return centres, mean, offset


def _sample(
    n: int, dim: int, n_clusters: int, seed: int, sketch: bool, noise: float, dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) L2-normalised embeddings in `dtype` and their labels (n,); photos or sketches."""
    centres, mean, offset = _world(dim, n_clusters, seed)
    rng = np.random.default_rng([seed, 2 if sketch else 1])
    labels = rng.integers(0, n_clusters, size=n)  # (N,) int64
    out = np.empty((n, dim), dtype=dtype)  # (N, D)
    base = mean + offset if sketch else mean  # (D,)
    for start in range(0, n, _CHUNK):
        rows = labels[start:start + _CHUNK]
        x = rng.standard_normal((len(rows), dim), dtype=np.float32)
        x *= noise / np.sqrt(dim)  # noise of norm ~ `noise`
        x += centres[rows]
        x += base
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + len(rows)] = x
    return out, labels


def synthetic_embeddings(
    n: int, dim: int, n_clusters: int = 1000, seed: int = 0, *, noise: float = 0.8,
    dtype: np.dtype = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Photo-like gallery embeddings (N, D) L2-normalised in `dtype`, and their class labels (N,) int64."""
    return _sample(n, dim, n_clusters, seed, sketch=False, noise=noise, dtype=np.dtype(dtype))


def synthetic_queries(
    n: int, dim: int, n_clusters: int = 1000, seed: int = 0, *, noise: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Sketch-like queries (Q, D) float32 L2-normalised for the gallery of the same `seed`, and labels (Q,)."""
    return _sample(n, dim, n_clusters, seed, sketch=True, noise=noise, dtype=np.dtype(np.float32))
