"""Retrieval half of the engine: the embedding store and the FAISS gallery index.

- store: StoreWriter / open_store, float16 shards + parquet ids, atomic commits, resumable
- kinds: FAISS index kinds (flat, ivfpq, hnsw), their parameters and the `auto` rule
- gallery: GalleryIndex (build, build_from_store, search, save, load, check_compatible)
- exact: blocked-GEMM exact top-k over the float16 gallery (flat search of query batches on CPU)
- recall: recall_at_k against exact search, tune_search for a target recall
- build: build_index and update_index, the library functions behind `splip-engine index [--update]`
- synthetic: seeded clustered gallery embeddings and sketch-like queries for tests and benchmarks
"""
from splip_engine.index import exact
from splip_engine.index.build import build_index, update_index
from splip_engine.index.gallery import MAX_K, GalleryIndex
from splip_engine.index.recall import recall_at_k, tune_search
from splip_engine.index.store import Store, StoreWriter, open_store
from splip_engine.index.synthetic import synthetic_embeddings, synthetic_queries

__all__ = [
    "MAX_K",
    "GalleryIndex",
    "Store",
    "StoreWriter",
    "build_index",
    "open_store",
    "recall_at_k",
    "synthetic_embeddings",
    "synthetic_queries",
    "tune_search",
    "update_index",
]
