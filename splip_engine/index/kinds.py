"""The FAISS index kinds behind GalleryIndex: their parameters, memory footprint, construction,
search-time knobs, and the `auto` rule that picks one by gallery size and memory budget.

All kinds score by inner product (cosine on the L2-normalised embeddings) and keep vectors as
float16, the store's own precision, so on store embeddings flat search is exact:
- flat:  IndexScalarQuantizer QT_fp16, exhaustive (measured faster here than IndexFlatIP's BLAS
         path for top-100 and half its memory).
- ivfpq: IndexIVFPQ (spherical k-means coarse quantizer, PQ codes) whose top k * k_factor
         candidates are re-ranked exactly on float16 vectors (IndexRefine): PQ alone ranks the
         close neighbours of a sketch query too coarsely (recall@100 ~0.73 on the synthetic data,
         and with 1000 neighbours per class the true top-100 is within the PQ top-400 only ~77% of
         the time, within the top-1600 always). With refine=False only the PQ codes are kept
         (compact, lower recall).
- hnsw:  IndexHNSWSQ QT_fp16 graph (M links per node).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.optional import import_faiss

KINDS = ("flat", "ivfpq", "hnsw")
FLAT_MAX_BYTES = 200_000 * 512 * 2  # auto: flat up to this many bytes of float16 vectors (200k x 512, or
# 1.6M x 64): a single exact query scans them in a few ms; beyond, tens of ms
DEFAULT_MEMORY_BUDGET = 8 << 30  # bytes; auto falls back to compact indexes above it
IVF_MIN_COUNT = 39 * 256  # FAISS wants >= 39 training points per centroid of the 256 PQ centroids
_MIN_POINTS_PER_LIST = 39
PQ_MAX_BYTES = 64
"""Default PQ code bytes per vector are min(D/4, 64): at D/16 (4 bytes for the tiny engine's D = 64)
the codes of the 1M benchmark's near-duplicate embeddings could not rank the true top-100 into
even the top-51,200 (recall@100 <= 0.92 at any nprobe / k_factor; 0.98 with 16 bytes)."""

_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivfpq": {"nlist": None, "m": None, "nbits": 8, "nprobe": 32, "k_factor": 16, "refine": True,
              "train_size": 100_000, "seed": 0},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128},
}
SEARCH_PARAMS = {"flat": (), "ivfpq": ("nprobe", "k_factor"), "hnsw": ("ef_search",)}
CAN_REMOVE = {"flat": True, "ivfpq": True, "hnsw": False}
"""Whether rows can be removed in place (every kind can add): an HNSW graph cannot unlink a node,
so removing ids from an hnsw index means rebuilding it."""
IVF_REGROW_FACTOR = 2.0
"""An ivfpq index whose gallery grew past this many times the size it was trained on is rebuilt
(retrained) on update: its coarse lists and PQ codebooks were fitted to the smaller gallery."""

log = logging.getLogger(__name__)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise SpLIPError(f"index kind {kind!r} is not one of {('auto', *KINDS)}")


def resolve_params(kind: str, count: int, dim: int, params: dict[str, Any]) -> dict[str, Any]:
    """`params` over the kind's defaults, with size-dependent defaults filled in; SpLIPError if invalid."""
    _check_kind(kind)
    unknown = sorted(set(params) - set(_DEFAULTS[kind]))
    if unknown:
        raise SpLIPError(f"unknown {kind} index parameter(s) {unknown}; valid: {sorted(_DEFAULTS[kind])}")
    out = {**_DEFAULTS[kind], **params}
    if kind == "ivfpq":
        if count < IVF_MIN_COUNT:
            raise SpLIPError(f"kind ivfpq needs at least {IVF_MIN_COUNT} vectors to train its quantizers "
                             f"(got {count}); use kind flat, which is exact and fast at this size")
        n_train = min(count, out["train_size"])
        if out["nlist"] is None:  # ~4 sqrt(N) lists, with enough training points for each
            out["nlist"] = max(1, min(round(4 * math.sqrt(count)), n_train // _MIN_POINTS_PER_LIST))
        if out["m"] is None:  # largest divisor of D up to min(D/4, 64): sub-vectors of >= 4 dims, <= 64 bytes
            out["m"] = max(m for m in range(1, max(1, min(dim // 4, PQ_MAX_BYTES)) + 1) if dim % m == 0)
        if dim % out["m"]:
            raise SpLIPError(f"ivfpq m={out['m']} must divide the embedding dim {dim}")
        out["nprobe"] = min(out["nprobe"], out["nlist"])
    for name in ("nlist", "m", "nbits", "nprobe", "k_factor", "train_size", "M", "ef_construction", "ef_search"):
        if name in out and (not isinstance(out[name], int) or out[name] < 1):
            raise SpLIPError(f"{kind} parameter {name}={out[name]!r} must be a positive integer")
    return out


def memory_bytes(kind: str, count: int, dim: int, params: dict[str, Any]) -> int:
    """Approximate RAM of an index of `count` vectors (what `auto` compares with the budget)."""
    if kind == "flat":
        return count * dim * 2
    if kind == "hnsw":
        return count * (dim * 2 + params["M"] * 2 * 4 + 16)  # fp16 vectors + level-0 links
    codes = count * (params["m"] * params["nbits"] // 8 + 8)  # PQ code + id per vector
    return codes + params["nlist"] * dim * 4 + (count * dim * 2 if params["refine"] else 0)


def choose_kind(count: int, dim: int, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> tuple[str, dict[str, Any]]:
    """The `auto` rule: exact flat up to FLAT_MAX_BYTES of vectors when it fits the budget (and always
    below IVF_MIN_COUNT), else IVF-PQ with exact re-ranking, else IVF-PQ codes alone; HNSW is never
    chosen automatically (its memory is flat's plus the graph, and its build is the slowest)."""
    flat_bytes = memory_bytes("flat", count, dim, {})
    if count < IVF_MIN_COUNT or (flat_bytes <= min(FLAT_MAX_BYTES, memory_budget_bytes)):
        return "flat", resolve_params("flat", count, dim, {})
    for refine in (True, False):
        params = resolve_params("ivfpq", count, dim, {"refine": refine})
        need = memory_bytes("ivfpq", count, dim, params)
        if need <= memory_budget_bytes:
            if not refine:
                log.warning("ivfpq without exact re-ranking to fit the memory budget: expect lower recall")
            return "ivfpq", params
    raise SpLIPError(f"{count} x {dim} embeddings need {need / 2**30:.1f} GiB even as PQ codes, more than "
                     f"the memory budget {memory_budget_bytes / 2**30:.1f} GiB; raise --memory-budget")


def create_index(kind: str, dim: int, params: dict[str, Any]):
    """An empty (untrained) FAISS index of `kind` for inner-product search in `dim` dimensions."""
    faiss = import_faiss()
    ip, fp16 = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer.QT_fp16
    if kind == "flat":
        return faiss.IndexScalarQuantizer(dim, fp16, ip)
    if kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, fp16, params["M"], ip)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, params["nlist"], params["m"], params["nbits"], ip)
    ivf.cp.spherical = True  # unit-norm centroids: inner product to a centroid is a cosine
    ivf.cp.seed = params["seed"]
    ivf.pq.cp.seed = params["seed"]
    return faiss.IndexRefine(ivf, faiss.IndexScalarQuantizer(dim, fp16, ip)) if params["refine"] else ivf


def apply_search_params(index, kind: str, params: dict[str, Any]) -> None:
    """Set the search-time knobs (nprobe, k_factor, efSearch) of a built or loaded index."""
    faiss = import_faiss()
    if kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
        if params["refine"]:
            faiss.downcast_index(index).k_factor = params["k_factor"]
    elif kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = params["ef_search"]


def remove_positions(index, kind: str, positions: np.ndarray) -> None:
    """Remove the rows at sorted unique `positions` (n,) int64 from a flat or ivfpq index in place,
    keeping the other rows in order, renumbered 0..N-n-1 (GalleryIndex's labels are row positions)."""
    if not CAN_REMOVE[kind]:
        raise SpLIPError(f"a {kind} index cannot remove rows in place; rebuild it")
    faiss = import_faiss()
    count = index.ntotal
    selector = faiss.IDSelectorBatch(len(positions), faiss.swig_ptr(positions))
    if kind == "flat":
        index.remove_ids(selector)  # IndexFlatCodes compacts in order: labels stay positions
        return
    ivf = faiss.extract_index_ivf(index)
    ivf.remove_ids(selector)  # the IVF lists keep each row's old label: renumber them
    keep = np.ones(count, dtype=bool)
    keep[positions] = False
    renumber = (np.cumsum(keep) - 1).astype(np.int64)  # (N,) old label -> new label
    lists = ivf.invlists
    for list_no in range(lists.nlist):
        size = lists.list_size(list_no)
        if size:
            labels = renumber[faiss.rev_swig_ptr(lists.get_ids(list_no), size)]  # (size,) int64
            codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * lists.code_size).copy()
            lists.update_entries(list_no, 0, size, faiss.swig_ptr(labels), faiss.swig_ptr(codes))
    if ivf.ntotal != index.ntotal:  # IndexRefine: its exact re-ranking codes are a flat index by position
        refine = faiss.downcast_index(index)
        faiss.downcast_index(refine.refine_index).remove_ids(selector)
        refine.ntotal = ivf.ntotal
