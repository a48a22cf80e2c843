"""Runtime: load exported engines and embed sketches / photos in batches.

- base: Encoder, the base class (input checks, preprocessing, batching, static-batch padding)
- torch_backend / ort_backend / tensorrt_backend: one Encoder per backend
- loader: load_engine(path, backend, device), the auto backend choice
- pipeline: decode + preprocess in worker processes, overlapped with inference
- inputs: resolve a directory / file list / parquet into (id, path) pairs
- embed_job: the offline embedding job into a store (resumable, per-phase timings)
- ray_job: the same job on Ray Data (actor pool of encoders)
"""
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.loader import load_engine

__all__ = ["Encoder", "load_engine"]
