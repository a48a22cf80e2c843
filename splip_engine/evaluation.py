"""Retrieval metrics of SPEC §5 (mAP@all, mAP@K, P@K) and FG-ZS Acc@k (SPEC §4), chunked over queries.

Scores are float32 cosines (inputs are L2-normalised here); the gallery is ranked by descending
score with ties broken by gallery order (stable sort). Each chunk of queries is ranked with one
matmul + one stable argsort; only the ranks of the relevant photos (R per query) are kept, and the
AP arithmetic runs on those in float64. Memory is bounded by the chunk, not by queries x gallery.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from splip_engine.errors import SpLIPError

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 256 * 2**20
"""Budget of the per-chunk buffers (auto chunk size)."""
_BYTES_PER_SCORE = 18
"""Per (query, photo) pair: scores f32 + sorted scores f32 + order int64 + relevant, ranked bool."""


def retrieval_metrics(
    q_emb: Any,
    q_labels: Any,
    g_emb: Any,
    g_labels: Any,
    ks: Sequence[int] = (100, 200),
    chunk_size: int | None = None,
) -> dict[str, float | int]:
    """Category-level retrieval metrics of SPEC §5, as fractions.

    q_emb (Q, D) / g_emb (N, D): numpy arrays or torch tensors, any float dtype, not necessarily
    normalised (CUDA tensors are scored on their GPU). q_labels (Q,) / g_labels (N,): class ids or
    names (any hashable). Returns `map_all`, `map_{K}` and `prec_{K}` for each K in ks, `n_queries`
    (queries averaged over) and `n_skipped` (queries with no relevant photo, left out of the means).
    chunk_size: queries ranked at once (default: as many as fit in ~256 MiB).
    """
    ks = _check_ks(ks)
    queries, gallery = _normalized_pair(q_emb, g_emb)  # (Q, D), (N, D) float32
    q_codes, g_codes = _label_codes(q_labels, g_labels, len(queries), len(gallery), "labels")
    q_codes, g_codes = q_codes.to(gallery.device), g_codes.to(gallery.device)  # (Q,), (N,) int64
    n_relevant = torch.bincount(g_codes, minlength=int(q_codes.max()) + 1)[q_codes]  # (Q,) int64: R
    kept = torch.nonzero(n_relevant > 0).flatten()  # (Q',) int64
    n_skipped = len(queries) - len(kept)
    if len(kept) == 0:
        raise SpLIPError(
            f"none of the {len(queries)} queries has a relevant photo in the gallery (no value of "
            "q_labels occurs in g_labels): pass labels that use the same class ids/names on both sides"
        )
    if n_skipped:
        logger.info("retrieval_metrics: %d queries with no relevant photo skipped", n_skipped)

    names = ["map_all"] + [f"map_{k}" for k in ks] + [f"prec_{k}" for k in ks]
    per_query = torch.empty(len(names), len(kept), dtype=torch.float64, device=gallery.device)  # (M, Q')
    workspace = _Workspace(chunk_size, gallery)
    for start, rows, scores in workspace.scored_chunks(queries, kept):
        relevant = workspace.get("relevant", torch.bool)  # (c, N) bool
        torch.eq(g_codes[None, :], q_codes[rows][:, None], out=relevant)
        ranks = _relevant_ranks(scores, relevant, n_relevant[rows], workspace)  # (c, Rmax) float64
        r_all = n_relevant[rows].to(torch.float64)  # (c,) float64: R
        r_k = [r_all.clamp(max=k) for k in ks]  # (c,) float64: min(K, R)
        per_query[:, start : start + len(rows)] = torch.stack(
            [_average_precision(ranks, r_all)]
            + [_average_precision(torch.where(ranks <= k, ranks, math.inf), r) for k, r in zip(ks, r_k)]
            + [(ranks <= r[:, None]).sum(dim=1) / r for r in r_k]
        )

    metrics: dict[str, float | int] = dict(zip(names, per_query.mean(dim=1).tolist()))
    metrics["n_queries"] = len(kept)
    metrics["n_skipped"] = n_skipped
    return metrics


def fg_accuracy(
    q_emb: Any,
    g_emb: Any,
    pair_index: Any,
    q_categories: Any = None,
    g_categories: Any = None,
    ks: Sequence[int] = (1, 5),
    chunk_size: int | None = None,
) -> dict[str, float | int]:
    """FG-ZS Acc@k (SPEC §4): share of queries whose paired photo g_emb[pair_index[i]] ranks in the
    top k, ranked among the photos of the query's category when categories are given.

    Ties are broken by gallery order, as in retrieval_metrics. Returns `acc_{k}` for each k and
    `n_queries`.
    """
    ks = _check_ks(ks)
    queries, gallery = _normalized_pair(q_emb, g_emb)  # (Q, D), (N, D) float32
    targets = _pair_targets(pair_index, len(queries), len(gallery)).to(gallery.device)  # (Q,) int64
    same_category = _category_mask_fn(q_categories, g_categories, targets, len(queries), len(gallery))
    photo_ids = torch.arange(len(gallery), device=gallery.device)  # (N,)

    rank = torch.empty(len(queries), dtype=torch.int64, device=gallery.device)  # (Q,) 0-based, of the pair
    workspace = _Workspace(chunk_size, gallery)
    all_rows = torch.arange(len(queries), device=gallery.device)
    for start, rows, scores in workspace.scored_chunks(queries, all_rows):
        target = targets[rows, None]  # (c, 1) int64
        target_score = scores.gather(1, target)  # (c, 1) float32
        tied_before = (scores == target_score) & (photo_ids[None, :] < target)  # (c, N) bool
        before = (scores > target_score) | tied_before
        if same_category is not None:
            before &= same_category(rows)
        rank[start : start + len(rows)] = before.sum(dim=1)

    metrics: dict[str, float | int] = {f"acc_{k}": (rank < k).double().mean().item() for k in ks}
    metrics["n_queries"] = len(queries)
    return metrics


def format_metrics_table(results: dict[str, dict]) -> str:
    """Markdown table of {setting: metrics dict}, fractions shown in %, counts as integers."""
    columns = list(dict.fromkeys(name for metrics in results.values() for name in metrics))
    header = ["setting"] + [_column_title(name) for name in columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for setting, metrics in results.items():
        cells = [setting] + [_format_cell(metrics.get(name)) for name in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class _Workspace:
    """(chunk, N) buffers allocated once per call and reused by every chunk of queries.

    Allocating the 10-70 MB chunk temporaries anew for every chunk let the C heap fragment: RSS
    grew by ~35 MB per chunk (4 GB over 10^4 x 10^5); reused buffers keep it flat.
    """

    def __init__(self, chunk_size: int | None, gallery: torch.Tensor):
        self.chunk_size = _chunk_rows(chunk_size, len(gallery))
        self._gallery = gallery  # (N, D) float32
        self._buffers: dict[str, torch.Tensor] = {}
        self._rows = 0

    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The (c, N) buffer `name` for the current chunk of c queries."""
        if name not in self._buffers:
            shape = (self.chunk_size, len(self._gallery))
            self._buffers[name] = torch.empty(shape, dtype=dtype, device=self._gallery.device)
        return self._buffers[name][: self._rows]

    def scored_chunks(
        self, queries: torch.Tensor, rows: torch.Tensor
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per chunk of the query ids rows (Q',): its offset in rows, its ids (c,) and the cosine
        scores (c, N) float32 of those queries (L2-normalised (Q, D)) against the gallery."""
        for start in range(0, len(rows), self.chunk_size):
            chunk = rows[start : start + self.chunk_size]
            self._rows = len(chunk)
            scores = torch.matmul(queries[chunk], self._gallery.T, out=self.get("scores", torch.float32))
            yield start, chunk, scores  # (c, N) float32


def _relevant_ranks(
    scores: torch.Tensor, relevant: torch.Tensor, n_relevant: torch.Tensor, workspace: _Workspace
) -> torch.Tensor:
    """1-based ranks (c, Rmax) float64 of each query's relevant photos, ascending, padded with +inf.

    scores (c, N) float32, relevant (c, N) bool, n_relevant (c,) int64 = relevant.sum(1) > 0.
    """
    order = workspace.get("order", torch.int64)  # (c, N) int64: gallery ids, best first
    torch.sort(scores, dim=1, descending=True, stable=True, out=(workspace.get("sorted", torch.float32), order))
    ranked_relevant = workspace.get("ranked", torch.bool)  # (c, N) bool: rel[i] of SPEC §5
    torch.gather(relevant, 1, order, out=ranked_relevant)
    rows, cols = torch.nonzero(ranked_relevant, as_tuple=True)  # row-major: ranks ascend per row
    first = torch.cumsum(n_relevant, 0) - n_relevant  # (c,) index of each row's first hit in rows
    hit = torch.arange(len(rows), device=rows.device) - first[rows]  # (nnz,) 0-based hit number
    ranks = torch.full((len(scores), int(n_relevant.max())), math.inf, dtype=torch.float64, device=rows.device)
    ranks[rows, hit] = (cols + 1).to(torch.float64)
    return ranks


def _average_precision(ranks: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """VOC-style AP (SPEC §5) (c,) float64 from the ranks (c, Rmax) of the hits (+inf = no hit).

    The padded, right-monotone precision only changes recall at hits, where precision is
    hits / rank; so AP = sum over hits of max(precision at this and later hits) / R.
    """
    hits = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64, device=ranks.device)  # (Rmax,) tp
    precision = hits / ranks  # (c, Rmax); 0 at padding
    monotone = torch.flip(torch.cummax(torch.flip(precision, [1]), dim=1).values, [1])
    return monotone.sum(dim=1) / n_relevant


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise SpLIPError(f"ks={ks!r}: pass one or more positive integers, e.g. ks=(100, 200)")
    return tuple(int(k) for k in ks)


def _chunk_rows(chunk_size: int | None, n_gallery: int) -> int:
    """Queries per chunk: chunk_size, or as many as fit _CHUNK_BYTES of (c, N) buffers."""
    if chunk_size is None:
        return max(1, _CHUNK_BYTES // (_BYTES_PER_SCORE * n_gallery))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SpLIPError(f"chunk_size={chunk_size!r}: pass a positive integer, or None for automatic")
    return chunk_size


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as e:
        raise SpLIPError(f"{name}: expected a numpy array or torch tensor of numbers, got {type(x).__name__}") from e


def _normalized_pair(q_emb: Any, g_emb: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return L2-normalised float32 (Q, D) queries and (N, D) gallery on one device."""
    queries, gallery = _as_tensor(q_emb, "q_emb"), _as_tensor(g_emb, "g_emb")
    for name, x in (("q_emb", queries), ("g_emb", gallery)):
        if x.ndim != 2:
            raise SpLIPError(f"{name} has shape {tuple(x.shape)}: pass a 2-D (rows, dim) array of embeddings")
        if len(x) == 0:
            raise SpLIPError(f"{name} is empty (shape {tuple(x.shape)}): pass at least one embedding")
    if queries.shape[1] != gallery.shape[1]:
        raise SpLIPError(
            f"q_emb is {tuple(queries.shape)} but g_emb is {tuple(gallery.shape)}: queries and gallery "
            "must have the same embedding dim (embed both with the same model)"
        )
    device = gallery.device
    return _normalized(queries, "q_emb", device), _normalized(gallery, "g_emb", device)


def _normalized(x: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    """Row-wise L2-normalised float32 copy of x (n, D), built in blocks to bound the temporaries."""
    out = torch.empty(x.shape, dtype=torch.float32, device=device)  # (n, D) float32
    for start in range(0, len(x), 16384):
        block = x[start : start + 16384].to(device=device, dtype=torch.float32)
        if not torch.isfinite(block).all():
            row = start + int(torch.nonzero(~torch.isfinite(block).all(dim=1))[0])
            raise SpLIPError(f"{name} row {row} has NaN or inf values: check the embedding step")
        out[start : start + len(block)] = F.normalize(block, dim=1)
    return out


def _label_array(x: Any, name: str, n: int, what: str) -> np.ndarray:
    """1-D numpy array of n labels (object dtype when the labels are not plain numbers/strings)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        arr = np.empty(len(x), dtype=object)
        arr[:] = list(x)
    if len(arr) != n:
        owner = "q_emb" if name.startswith("q_") else "g_emb"
        raise SpLIPError(f"{owner} has {n} rows but {name} has {len(arr)} {what}: pass one per row")
    return arr


def _label_codes(q_labels: Any, g_labels: Any, n_q: int, n_g: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map query and gallery labels jointly to int64 codes (Q,), (N,): equal labels, equal codes."""
    prefix = "labels" if what == "labels" else "categories"
    q = _label_array(q_labels, f"q_{prefix}", n_q, what)
    g = _label_array(g_labels, f"g_{prefix}", n_g, what)
    families = {_label_family(q), _label_family(g)}
    if families == {"number", "text"}:
        raise SpLIPError(
            f"q_{prefix} ({q.dtype}) and g_{prefix} ({g.dtype}) mix numbers and strings: "
            "use class ids on both sides or class names on both sides"
        )
    if "object" in families:
        codes: dict[Any, int] = {}
        joint = np.array([codes.setdefault(v, len(codes)) for v in [*q.tolist(), *g.tolist()]], dtype=np.int64)
    else:
        joint = np.unique(np.concatenate([q, g]), return_inverse=True)[1].reshape(-1)
    joint = torch.from_numpy(joint.astype(np.int64))
    return joint[:n_q], joint[n_q:]


def _label_family(arr: np.ndarray) -> str:
    return {"b": "number", "i": "number", "u": "number", "f": "number", "U": "text", "S": "text"}.get(
        arr.dtype.kind, "object"
    )


def _pair_targets(pair_index: Any, n_q: int, n_g: int) -> torch.Tensor:
    """pair_index as int64 (Q,), checked to be one gallery row per query."""
    targets = _as_tensor(pair_index, "pair_index")
    if targets.ndim != 1 or len(targets) != n_q or targets.is_floating_point():
        raise SpLIPError(
            f"pair_index has shape {tuple(targets.shape)} ({targets.dtype}): pass {n_q} integer gallery "
            "row ids, one per query"
        )
    targets = targets.to(torch.int64)
    bad = torch.nonzero((targets < 0) | (targets >= n_g)).flatten()
    if len(bad):
        i = int(bad[0])
        raise SpLIPError(f"pair_index[{i}]={int(targets[i])} is outside the gallery's {n_g} rows")
    return targets


def _category_mask_fn(q_categories: Any, g_categories: Any, targets: torch.Tensor, n_q: int, n_g: int):
    """None without categories, else rows (c,) -> (c, N) bool mask of the photos in each query's category."""
    if q_categories is None and g_categories is None:
        return None
    if q_categories is None or g_categories is None:
        raise SpLIPError("pass both q_categories and g_categories (or neither, to rank the whole gallery)")
    q_codes, g_codes = _label_codes(q_categories, g_categories, n_q, n_g, "categories")
    q_codes, g_codes = q_codes.to(targets.device), g_codes.to(targets.device)
    wrong = torch.nonzero(g_codes[targets] != q_codes).flatten()
    if len(wrong):
        i = int(wrong[0])
        raise SpLIPError(
            f"query {i}'s paired photo (g row {int(targets[i])}) is not in the query's category: "
            "check pair_index and the categories"
        )
    return lambda rows: g_codes[None, :] == q_codes[rows][:, None]


_TITLES = {"map": "mAP", "prec": "P", "acc": "Acc"}
_COUNT_TITLES = {"n_queries": "queries", "n_skipped": "skipped", "n_gallery": "gallery"}


def _column_title(name: str) -> str:
    match = re.fullmatch(r"(map|prec|acc)_(\w+)", name)
    if match:
        return f"{_TITLES[match[1]]}@{match[2]} (%)"
    return _COUNT_TITLES.get(name, name)


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{100 * value:.2f}"
    return str(value)
