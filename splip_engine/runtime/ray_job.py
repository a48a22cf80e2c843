"""The embedding job on Ray Data: one read task per input unit (a tar shard, a parquet row group,
a chunk of files) decodes it to uint8 pixels, `map_batches` over an actor pool of encoders embeds
them, and the driver writes the store through the same `StoreSink` as the local job, so the
store (ids, metadata, errors, unit states, resumability) is exactly the local job's.

Locally that is a Ray cluster of one machine (`ray.init()`); on a cluster (`RAY_ADDRESS`) the
same code scales out. Every unit ends with a marker row holding its row count, so the driver
knows when a unit is complete although Ray may deliver its rows in any order.
"""
from __future__ import annotations

import json
import pickle
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.runtime.embed_job import (
    EmbedReport,
    StoreSink,
    engine_info,
    open_job,
    peak_rss_mb,
)
from splip_engine.runtime.inputs import InputOptions, Unit
from splip_engine.runtime.pipeline import METADATA_FIELDS, BatchDecoder, decode_unit

_STRING_COLUMNS = ("unit", "unit_key", "id", "path", "metadata", "error")
"""Columns of the Ray rows besides pixels / end / embedding; `metadata` is the JSON list of the
METADATA_FIELDS values (strings or null), so Arrow never has to guess the type of an all-null column."""


def _rows(unit: Unit, ids, paths, metadata, pixels: np.ndarray, errors: list[str], end: int) -> dict:
    """A Ray batch: one row per id (pixels (n, S, S, 3) uint8, error "" or its reason) tagged with
    its unit's name and key ("" for none); `end` >= 0 only on a unit's marker row (its row count)."""
    n = len(ids)
    batch = {"unit": np.array([unit.name] * n, dtype=object), "unit_key": np.array([unit.key or ""] * n, dtype=object),
             "id": np.array(ids, dtype=object),
             "path": np.array(paths, dtype=object), "error": np.array(errors, dtype=object),
             "pixels": pixels, "end": np.full(n, -1, np.int64),
             "metadata": np.array([json.dumps(row) for row in zip(*(metadata[name] for name in METADATA_FIELDS))]
                                  if n else [], dtype=object)}
    if end >= 0:
        batch["end"][-1] = end
    return batch


def _read_units(batch: dict, options: InputOptions, modality: str, spec, batch_size: int) -> Iterator[dict]:
    """Read task: the pickled units of `batch` -> Ray batches of decoded rows, errors, and a marker."""
    size = spec.image_size
    for blob in batch["unit"]:
        unit = pickle.loads(blob)
        count = 0
        for decoded in decode_unit(unit, options, modality, spec, batch_size, BatchDecoder()):
            errors = decoded.errors
            ids = decoded.ids + [e["id"] for e in errors]
            pixels = np.concatenate([decoded.pixels, np.zeros((len(errors), size, size, 3), np.uint8)])
            metadata = {name: decoded.metadata[name] + [e.get(name, "") if name == "key" else None for e in errors]
                        for name in METADATA_FIELDS}
            reasons = [""] * len(decoded.ids) + [e["reason"] for e in errors]
            count += len(ids)
            if decoded.last:  # the marker: one more row, all zeros, holding the unit's row count
                ids, pixels = [*ids, ""], np.concatenate([pixels, np.zeros((1, size, size, 3), np.uint8)])
                metadata = {name: [*values, None] for name, values in metadata.items()}
                reasons = [*reasons, ""]
            yield _rows(unit, ids, decoded.paths + [e["path"] for e in errors] + [""] * decoded.last,
                        metadata, pixels, reasons, count if decoded.last else -1)


class _EncodeActor:
    """One encoder per Ray actor: normalises and embeds the good rows of a batch (others get zeros)."""

    def __init__(self, engine_dir: str, backend: str, device: str, modality: str):
        from splip_engine.runtime.loader import load_engine

        self.encoder = load_engine(engine_dir, backend=backend, device=device)
        self.modality = modality
        self.decoder = BatchDecoder()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = np.flatnonzero((batch["error"] == "") & (batch["end"] < 0))
        embeddings = np.zeros((len(batch["id"]), self.encoder.embedding_dim), dtype=np.float32)
        if len(good):
            pixels = self.decoder.normalise(np.asarray(batch["pixels"])[good], self.encoder.spec)
            embeddings[good] = self.encoder.embed_pixels(pixels, self.modality)
        out = {name: batch[name] for name in (*_STRING_COLUMNS, "end")}
        out["embedding"] = embeddings
        return out


def _store_batch(sink: StoreSink, batch: dict[str, np.ndarray], expected: dict, received: Counter) -> None:
    """Driver side: the rows of one Ray batch into the store, unit by unit; a unit is finished once
    its marker and all its rows have arrived."""
    rows_of = defaultdict(list)
    for i, unit in enumerate(batch["unit"]):
        rows_of[str(unit)].append(i)
    for unit, rows in rows_of.items():
        key = str(batch["unit_key"][rows[0]]) or None
        marker = [i for i in rows if batch["end"][i] >= 0]
        if marker:
            expected[unit] = int(batch["end"][marker[0]])
        data = [i for i in rows if batch["end"][i] < 0]
        received[unit] += len(data)
        bad = [i for i in data if batch["error"][i]]
        good = [i for i in data if not batch["error"][i]]
        ids, paths = [str(batch["id"][i]) for i in good], [str(batch["path"][i]) for i in good]
        values = [json.loads(batch["metadata"][i]) for i in good]
        metadata = {name: [row[n] for row in values] for n, name in enumerate(METADATA_FIELDS)}
        keep, duplicates = sink.select(key, ids, paths, metadata["key"])
        errors = [{"id": str(batch["id"][i]), "path": str(batch["path"][i]),
                   "key": json.loads(batch["metadata"][i])[0] or "", "reason": str(batch["error"][i])} for i in bad]
        done = unit in expected and received[unit] == expected[unit]
        sink.store(key, batch["embedding"][good][keep], [ids[i] for i in keep], [paths[i] for i in keep],
                   {name: [values[i] for i in keep] for name, values in metadata.items()}, errors + duplicates,
                   last=done)


def run_embed_ray(engine_dir: str | Path, source: str | Path, out: str | Path, modality: str = "photo",
                  backend: str = "auto", device: str = "cpu", batch_size: int = 64, num_actors: int = 2,
                  shard_size: int | None = None, progress: bool = True, kind: str = "auto",
                  options: InputOptions | None = None, retry_errors: bool = False,
                  commit_interval_s: float | None = None) -> EmbedReport:
    """`run_embed` on Ray Data with `num_actors` encoder actors (see the module docstring)."""
    from splip_engine.optional import keep_offline

    keep_offline()  # Ray reads its usage-stats setting when it starts the cluster
    try:
        import ray
    except ImportError as e:
        raise SpLIPError("Ray is not installed: pip install 'splip-engine[distributed]'") from e
    from tqdm import tqdm

    from splip_engine.index.store import DEFAULT_COMMIT_INTERVAL_S, DEFAULT_SHARD_SIZE, StoreWriter
    from splip_engine.runtime.loader import load_engine

    start = time.perf_counter()
    probe = load_engine(engine_dir, backend=backend, device=device)
    report = EmbedReport(store=str(out), total_inputs=None, already_done=0)
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": keep_offline()})  # workers on other machines stay offline too
    ray.data.DataContext.get_current().enable_progress_bars = False
    with StoreWriter(out, dim=probe.embedding_dim, modality=modality, engine_info=engine_info(probe),
                     shard_size=shard_size or DEFAULT_SHARD_SIZE, retry_errors=retry_errors,
                     commit_interval_s=commit_interval_s or DEFAULT_COMMIT_INTERVAL_S) as writer:
        sink = StoreSink(writer, report)
        resolved, units, todo, _ = open_job(source, kind, options, writer, report, sink)
        blobs = [{"unit": pickle.dumps(unit)} for unit in units]
        report.timings["open"] = time.perf_counter() - start
        if blobs:
            dataset = ray.data.from_items(blobs, override_num_blocks=len(blobs)).map_batches(
                _read_units, batch_size=1, udf_modifying_row_count=True,
                fn_kwargs={"options": resolved.options, "modality": modality, "spec": probe.spec,
                           "batch_size": batch_size},
            ).map_batches(
                _EncodeActor,
                fn_constructor_kwargs={"engine_dir": str(engine_dir), "backend": backend, "device": device,
                                       "modality": modality},
                batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=num_actors), batch_format="numpy",
                num_gpus=1 if device == "cuda" else 0,
            )
            expected: dict[str, int] = {}
            received: Counter = Counter()
            with tqdm(total=todo, unit="img", desc=f"embed {modality} (ray)", disable=not progress) as bar:
                for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
                    _store_batch(sink, batch, expected, received)
                    bar.update(int((batch["end"] < 0).sum()))
            unfinished = sorted(u for u in received if received[u] != expected.get(u))
            if unfinished:
                raise SpLIPError(f"Ray delivered an incomplete unit ({unfinished[0]}); re-run to resume")
    report.timings["wall"] = time.perf_counter() - start
    report.peak_rss_mb = peak_rss_mb()
    return report
