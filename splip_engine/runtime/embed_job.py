"""The offline embedding job: input units -> decode workers -> engine -> store; resumable, with a
progress bar (rate, ETA) and per-phase timings. `StoreSink` is what the local job and the Ray job
(ray_job.py) both do with rows, so they write the same store."""
from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.inputs import Input, InputOptions, Unit, open_input

logger = logging.getLogger(__name__)

PHASES = ("open", "read+decode", "wait", "normalise", "encode", "write", "wall")
"""Timing keys of EmbedReport: read+decode is CPU seconds summed over the decode workers; wait is
the time the encoder waited for them (> 0: decoding is the bottleneck)."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class EmbedReport:
    """What one `embed` run did. `total_inputs` is None when the input's size is not known up front."""

    store: str
    total_inputs: int | None
    already_done: int
    embedded: int = 0
    failed: int = 0
    units_skipped: int = 0  # units a previous run had read whole: not read again
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    peak_rss_mb: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.timings["wall"] if self.timings["wall"] else 0.0


def engine_info(encoder: Encoder) -> dict:
    """Identity of the engine written into a store / index, so foreign mixes are refused."""
    return {"engine_hash": encoder.manifest.get("engine_hash"), "embedding_dim": encoder.embedding_dim,
            "precision": encoder.manifest.get("precision"), "image_size": encoder.image_size}


class StoreSink:
    """Rows into a StoreWriter the way every embedding job does it: units read whole by an earlier
    run are skipped unread; in a unit the killed run had started, rows already stored are dropped
    silently (a resume); anywhere else a stored id is a duplicate record, listed as an error."""

    def __init__(self, writer, report: EmbedReport):
        self.writer, self.report = writer, report
        self._resumed: set[str] = set()  # keys of units that were "partial" when this run reached them

    def units_to_read(self, units: Iterable[Unit]) -> Iterator[Unit]:
        """`units` without the done ones (counted in the report)."""
        from splip_engine.index.store import UNIT_DONE, UNIT_PARTIAL

        for unit in units:
            state = self.writer.unit_state(unit.key) if unit.key else None
            if state == UNIT_DONE:
                self.report.units_skipped += 1
                continue
            if state == UNIT_PARTIAL:
                self._resumed.add(unit.key)
            yield unit

    def select(self, unit_key: str | None, ids: Sequence[str], paths: Sequence[str],
               keys: Sequence[str | None]) -> tuple[list[int], list[dict[str, str]]]:
        """(positions of the rows to embed, duplicate errors): see the class docstring."""
        keep, duplicates, batch = [], [], set()
        for i, id_ in enumerate(ids):
            if not self.writer.has_row(id_) and id_ not in batch:
                keep.append(i)
                batch.add(id_)
            elif unit_key is None or unit_key not in self._resumed or id_ in batch:
                duplicates.append({"id": id_, "path": paths[i], "key": keys[i] or "",
                                   "reason": f"id {id_!r} is already stored from another record of the input; "
                                             f"this one ({paths[i]} {keys[i] or ''}) is skipped: ids must be unique"})
        return keep, duplicates

    def store(self, unit_key: str | None, embeddings: np.ndarray, ids: list[str], paths: list[str],
              metadata: dict[str, list], errors: list[dict[str, str]], last: bool) -> None:
        """Add the embedded rows (n, D) and the errors; after a unit's last batch, mark it done."""
        if ids:
            self.writer.add(embeddings, ids, paths, metadata=metadata, unit=unit_key)
        before = self.writer.error_count
        self.writer.add_errors(errors)
        self.report.embedded += len(ids)
        self.report.failed += self.writer.error_count - before
        if last and unit_key is not None:
            self.writer.finish_unit(unit_key)


class _Progress:
    """tqdm over images with rate and ETA; when the input's size is unknown (tar shards without
    img2dataset's stats files) the total is estimated from the units read so far."""

    def __init__(self, total: int | None, units: int | None, desc: str, disable: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", desc=desc, disable=disable, smoothing=0.05)
        self.estimate, self.units, self.units_done, self.seen = total is None and units, units, 0, 0

    def update(self, records: int, unit_done: bool) -> None:
        self.seen += records
        self.units_done += unit_done
        if self.estimate and unit_done:
            self.bar.total = round(self.seen / self.units_done * self.units)
        self.bar.update(records)

    def close(self) -> None:
        self.bar.close()


def open_job(source: str | Path, kind: str, options: InputOptions | None, writer, report: EmbedReport,
             sink: StoreSink) -> tuple[Input, Iterable[Unit], int | None, int | None]:
    """(the input, its units still to read, records to go where known, units to go where known)."""
    resolved = open_input(source, kind, options)
    count = resolved.count()
    if count == 0:
        raise SpLIPError(f"input {source} holds no images ({resolved.kind}): nothing to embed; check --input, or "
                         "pass a folder of images, a .txt list, a .parquet, tar shards or .ndjson drawings")
    report.total_inputs = count
    report.already_done = writer.count + writer.error_count
    units: Iterable[Unit] = sink.units_to_read(resolved.units(writer.is_done))
    n_units = None
    if resolved.kind in ("tar", "parquet-bytes", "ndjson"):  # one unit per file / row group: few, list them
        units = list(units)
        n_units = len(units)
    todo = None if count is None else max(count - report.already_done, 0)
    return resolved, units, todo, n_units


def run_embed(encoder: Encoder, source: str | Path, out: str | Path, modality: str = "photo",
              batch_size: int = 64, workers: int | None = None, shard_size: int | None = None,
              progress: bool = True, kind: str = "auto", options: InputOptions | None = None,
              retry_errors: bool = False, decode: str = "auto", decoder=None,
              commit_interval_s: float | None = None) -> EmbedReport:
    """Embed every image of `source` (any input kind, see runtime/inputs.py) into the store `out`.

    `workers` decode processes (default: one per core, 0 = in this process) read whole units.
    `decode` picks the batch decoder (runtime/gpu_decode.choose_decoder: "auto" decodes JPEGs on
    the encoder's GPU when it is on CUDA, else in the workers on the CPU); `decoder`, a
    pipeline.BatchDecoder, overrides it. Bad inputs are skipped and listed in the store's errors
    file; the store commits every `shard_size` rows and at least every `commit_interval_s` seconds
    (defaults: store.DEFAULT_*), and on the way out, Ctrl-C (KeyboardInterrupt) included, whatever
    is embedded; a re-run after a crash or an interrupt reads only what is missing, so every good
    input ends up exactly once in the store.
    """
    from splip_engine.index.store import DEFAULT_COMMIT_INTERVAL_S, DEFAULT_SHARD_SIZE, StoreWriter
    from splip_engine.runtime.gpu_decode import choose_decoder  # hook (#13): GPU decode for GPU jobs
    from splip_engine.runtime.pipeline import DecodePool, default_workers

    start = time.perf_counter()
    report = EmbedReport(store=str(out), total_inputs=None, already_done=0)
    timings = report.timings
    with StoreWriter(out, dim=encoder.embedding_dim, modality=modality, engine_info=engine_info(encoder),
                     shard_size=shard_size or DEFAULT_SHARD_SIZE, retry_errors=retry_errors,
                     commit_interval_s=commit_interval_s or DEFAULT_COMMIT_INTERVAL_S) as writer:
        sink = StoreSink(writer, report)
        resolved, units, todo, n_units = open_job(source, kind, options, writer, report, sink)
        timings["open"] = time.perf_counter() - start
        pool = DecodePool(default_workers() if workers is None else workers, resolved.options, modality,
                          encoder.spec, batch_size, decoder or choose_decoder(decode, encoder))
        bar = _Progress(todo, n_units, f"embed {modality}", disable=not progress)
        batches = pool.run(units)
        try:  # closed on an error too, so the CLI's error line starts on a line of its own
            for batch in batches:
                timings["read+decode"] += batch.decode_s
                t0 = time.perf_counter()
                keep, duplicates = sink.select(batch.unit_key, batch.ids, batch.paths, batch.metadata["key"])
                pixels = pool.decoder.normalise(batch.pixels[keep], encoder.spec)  # (n, 3, S, S) float32
                t1 = time.perf_counter()
                embeddings = encoder.embed_pixels(pixels, modality) if keep else None
                t2 = time.perf_counter()
                sink.store(batch.unit_key, embeddings, [batch.ids[i] for i in keep], [batch.paths[i] for i in keep],
                           {name: [values[i] for i in keep] for name, values in batch.metadata.items()},
                           batch.errors + duplicates, batch.last)
                timings["normalise"] += t1 - t0
                timings["encode"] += t2 - t1
                timings["write"] += time.perf_counter() - t2
                bar.update(len(batch.ids) + len(batch.errors), batch.last)
        finally:
            batches.close()  # now, not when the traceback is freed: on Ctrl-C the workers stop at once
            bar.close()
            timings["wait"] = pool.wait_s
    timings["wall"] = time.perf_counter() - start
    report.peak_rss_mb = peak_rss_mb()
    return report
