"""The embedding job on Ray Data: `map_batches` over an actor pool of encoders, one store out.

Locally that is a Ray cluster of one machine (`ray.init()`); on a cluster (`RAY_ADDRESS`) the
same code scales out. Decoding runs inside the actors; the driver writes the store, so its
format (and resumability) is exactly that of the local job.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.runtime.embed_job import EmbedReport, engine_info, pending_items, write_rows


class _EncodeActor:
    """One encoder per Ray actor; turns a batch of {id, path} into embeddings or error reasons."""

    def __init__(self, engine_dir: str, backend: str, device: str, modality: str):
        from splip_engine.runtime.loader import load_engine

        self.encoder = load_engine(engine_dir, backend=backend, device=device)
        self.modality = modality

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from splip_engine.data.transforms import preprocess_batch

        paths = [str(p) for p in batch["path"]]
        pixels, errors = preprocess_batch(paths, self.modality, self.encoder.spec)
        embeddings = np.zeros((len(paths), self.encoder.embedding_dim), dtype=np.float32)
        reasons = np.array([""] * len(paths), dtype=object)
        bad = {i for i, _ in errors}
        good = [i for i in range(len(paths)) if i not in bad]
        if good:
            embeddings[good] = self.encoder.embed_pixels(pixels, self.modality)
        for i, reason in errors:
            reasons[i] = reason
        return {"id": batch["id"], "path": batch["path"], "embedding": embeddings, "error": reasons}


def run_embed_ray(engine_dir: str | Path, source: str | Path, out: str | Path, modality: str = "photo",
                  backend: str = "auto", device: str = "cpu", batch_size: int = 64, num_actors: int = 2,
                  shard_size: int = 4096, progress: bool = True) -> EmbedReport:
    """`run_embed` on Ray Data with `num_actors` encoder actors (see the module docstring)."""
    try:
        import ray
    except ImportError as e:
        raise SpLIPError("Ray is not installed: pip install 'splip-engine[distributed]'") from e
    from tqdm import tqdm

    from splip_engine.index.store import StoreWriter
    from splip_engine.runtime.inputs import resolve_inputs
    from splip_engine.runtime.loader import load_engine

    start = time.perf_counter()
    items = resolve_inputs(source)
    probe = load_engine(engine_dir, backend=backend, device=device)
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    with StoreWriter(out, dim=probe.embedding_dim, modality=modality, engine_info=engine_info(probe),
                     shard_size=shard_size) as writer:
        todo = pending_items(items, writer)
        report = EmbedReport(store=str(out), total_inputs=len(items), already_done=len(items) - len(todo))
        if todo:
            dataset = ray.data.from_items([{"id": i, "path": p} for i, p in todo]).map_batches(
                _EncodeActor,
                fn_constructor_kwargs={"engine_dir": str(engine_dir), "backend": backend, "device": device,
                                       "modality": modality},
                batch_size=batch_size, concurrency=num_actors, batch_format="numpy",
                num_gpus=1 if device == "cuda" else 0,
            )
            bar = tqdm(total=len(todo), unit="img", desc=f"embed {modality} (ray)", disable=not progress)
            for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
                ok = batch["error"] == ""
                good = [(str(i), str(p)) for i, p in zip(batch["id"][ok], batch["path"][ok])]
                errors = [(str(p), str(r)) for p, r in zip(batch["path"][~ok], batch["error"][~ok])]
                write_rows(writer, batch["embedding"][ok], good, errors)
                report.embedded += len(good)
                report.failed += len(errors)
                bar.update(len(batch["id"]))
            bar.close()
    report.timings["wall"] = time.perf_counter() - start
    return report
