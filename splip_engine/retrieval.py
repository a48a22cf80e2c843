"""Sketch -> photo search over an engine + a gallery index (the results page: serve/results_page.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from splip_engine.errors import ImageDecodeError, SpLIPError


def search_readable(encoder, index, queries: Sequence[Any], k: int = 10, modality: str = "sketch",
                    names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Embed `queries` (paths / PIL / arrays) and return, per query in order, its top-k as
    {"query", "results": [{"rank", "id", "path", "score"}]}; a query that cannot be read gets
    {"query", "error": reason, "results": []} instead, so one bad query never sinks the others."""
    from splip_engine.data.transforms import preprocess_batch

    if encoder.embedding_dim != index.dim:
        raise SpLIPError(f"engine embeds to {encoder.embedding_dim} dims but the index holds {index.dim}: "
                         "build the index with this engine")
    queries = list(queries)
    names = list(names) if names is not None else [str(q) if isinstance(q, (str, Path)) else f"query-{i}"
                                                   for i, q in enumerate(queries)]
    errors: dict[int, str] = {}
    readable, embeddings = [], []
    for start in range(0, len(queries), encoder.batch_size):
        chunk = queries[start:start + encoder.batch_size]
        pixels, chunk_errors = preprocess_batch(chunk, modality, encoder.spec)  # (n_ok, 3, S, S) float32
        errors.update((start + i, message) for i, message in chunk_errors)
        readable += [start + i for i in range(len(chunk)) if start + i not in errors]
        embeddings.append(encoder.embed_pixels(pixels, modality))  # (n_ok, D) float32
    results = [{"query": name, "error": errors[i], "results": []} if i in errors else None
               for i, name in enumerate(names)]
    if readable:
        scores, ids = index.search(np.concatenate(embeddings), k)  # (n_ok, k) float32, (n_ok, k) object
        for i, row_scores, row_ids in zip(readable, scores, ids):
            hits = [{"rank": r + 1, "id": str(id_), "path": index.path_of(id_), "score": float(s)}
                    for r, (s, id_) in enumerate(zip(row_scores, row_ids)) if id_ is not None]
            results[i] = {"query": names[i], "results": hits}
    return results


def search_images(encoder, index, queries: Sequence[Any], k: int = 10, modality: str = "sketch",
                  names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """`search_readable`, all or nothing: the first query that cannot be read raises ImageDecodeError."""
    results = search_readable(encoder, index, queries, k=k, modality=modality, names=names)
    failed = next((entry for entry in results if "error" in entry), None)
    if failed is not None:
        raise ImageDecodeError(f"query {failed['query']}: {failed['error']}")
    return results
