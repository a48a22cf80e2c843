"""Runtime: load exported engines and embed sketches / photos in batches.

- base: Encoder, the base class (input checks, preprocessing, batching, static-batch padding)
- torch_backend / ort_backend / openvino_backend / tensorrt_backend: one Encoder per backend
- cpu_features: the CPU model and ISA flags (AVX2 .. AMX) that decide the CPU engine
- cpu_auto: backend="auto" on CPU, the fastest gated variant here, timed once and cached per CPU
- loader: load_engine(path, backend, device), the auto backend choice
- inputs: the input kinds (folder, file list, parquet of paths / image bytes, webdataset tar
  shards, QuickDraw ndjson) as records listed lazily in units a worker reads whole
- pipeline: decode workers reading whole units, streaming uint8 batches; the pluggable BatchDecoder
- embed_job: the offline embedding job into a store (resumable, progress with ETA, per-phase timings)
- ray_job: the same job on Ray Data (a read task per unit, an actor pool of encoders)
"""
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.loader import load_engine

__all__ = ["Encoder", "load_engine"]
