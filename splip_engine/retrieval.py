"""Sketch -> photo search over an engine + a gallery index, and the HTML page of the results."""
from __future__ import annotations

import base64
import html
import io
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


def _thumbnail_uri(path: str | Path, size: int = 128) -> str:
    """A small JPEG of `path` as a data: URI, so the page is one self-contained file."""
    from splip_engine.data.images import load_image

    try:
        image = load_image(path)
    except SpLIPError:
        return ""
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_results_html(results: list[dict[str, Any]], title: str = "SpLIP search results",
                        relevant: dict[str, set[str]] | None = None) -> str:
    """One row per query: the query sketch, then its ranked photos with scores; when `relevant`
    maps a query to its relevant ids, hits are framed green (relevant) or red."""
    rows = []
    for entry in results:
        cells = [f'<td class="q"><img src="{_thumbnail_uri(entry["query"])}"><br>{html.escape(Path(entry["query"]).name)}</td>']
        good = relevant.get(entry["query"]) if relevant else None
        for hit in entry["results"]:
            mark = "" if good is None else (" ok" if hit["id"] in good else " bad")
            cells.append(f'<td class="hit{mark}"><img src="{_thumbnail_uri(hit["path"])}"><br>'
                         f'{hit["rank"]}. {hit["score"]:.3f}<br><small>{html.escape(hit["id"])}</small></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    style = ("body{font-family:sans-serif} td{text-align:center;padding:4px;font-size:12px}"
             " img{width:96px;height:96px;object-fit:contain;background:#eee}"
             " td.q{border-right:3px solid #333} td.ok img{outline:3px solid #2a2}"
             " td.bad img{outline:3px solid #c22}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><table>{''.join(rows)}</table>"
            "</body></html>")


def write_results_html(results: list[dict[str, Any]], out: str | Path, **kwargs) -> Path:
    """Write `render_results_html(results)` to `out` atomically."""
    from splip_engine.io_utils import write_text_atomic

    write_text_atomic(out, render_results_html(results, **kwargs))
    return Path(out)

