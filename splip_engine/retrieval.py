"""Sketch -> photo search over an engine + a gallery index (the results page: serve/results_page.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from splip_engine.errors import SpLIPError


def search_images(encoder, index, queries: Sequence[Any], k: int = 10, modality: str = "sketch",
                  names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Embed `queries` (paths / PIL / arrays) and return, per query, its top-k as
    {"query", "results": [{"rank", "id", "path", "score"}]}; the query's own name is kept."""
    if encoder.embedding_dim != index.dim:
        raise SpLIPError(f"engine embeds to {encoder.embedding_dim} dims but the index holds {index.dim}: "
                         "build the index with this engine")
    embeddings = encoder.embed(list(queries), modality)  # (Q, D) float32
    scores, ids = index.search(embeddings, k)  # (Q, k) float32, (Q, k) object
    names = list(names) if names is not None else [str(q) if isinstance(q, (str, Path)) else f"query-{i}"
                                                   for i, q in enumerate(queries)]
    results = []
    for name, row_scores, row_ids in zip(names, scores, ids):
        hits = [{"rank": r + 1, "id": str(i), "path": index.path_of(i), "score": float(s)}
                for r, (s, i) in enumerate(zip(row_scores, row_ids)) if i is not None]
        results.append({"query": name, "results": hits})
    return results
