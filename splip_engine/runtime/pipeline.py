"""Batch pipeline: decode worker processes read input units whole (a tar shard, a parquet row
group, a chunk of files) and stream back batches of uint8 pixels, overlapped with inference.

Workers ship (n, S, S, 3) uint8, a quarter of the bytes of the float32 the encoder takes; the
consumer normalises once per batch (`BatchDecoder.normalise`). Queues are bounded, so memory is
a few batches per worker whatever the input size. A worker that dies (OOM killer, a crash in a
decoder library) stops the job with a message instead of hanging it; workers die with the job.

The decoder is pluggable: `BatchDecoder` decodes in the workers on the CPU; a subclass with
`in_workers = False` (a GPU decoder) gets the records' encoded sources in the consuming process
instead and decodes them there, in batches.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from splip_engine.data.sandbox import set_budget
from splip_engine.errors import SpLIPError
from splip_engine.runtime.inputs import (
    InputOptions,
    Record,
    RecordError,
    Unit,
    read_unit,
)

METADATA_FIELDS = ("key", "caption", "json")  # Record fields that become store metadata columns
_POLL_S = 0.5  # how often a waiting consumer checks that the workers are alive


class BatchDecoder:
    """Encoded sources (paths or bytes) -> (n, S, S, 3) uint8 pixels, then the encoder's float32.

    The default decodes on the CPU with `preprocess_uint8`, inside the decode workers."""

    in_workers = True

    def decode(self, sources: Sequence[str | bytes], modality: str, spec) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """(pixels (n_ok, S, S, 3) uint8 in order without the bad ones, [(index, reason)] of the bad ones)."""
        from splip_engine.data.transforms import preprocess_batch_uint8

        return preprocess_batch_uint8(sources, modality, spec)

    def normalise(self, pixels: np.ndarray, spec) -> np.ndarray:
        """(n, S, S, 3) uint8 -> (n, 3, S, S) float32, what `Encoder.embed_pixels` takes."""
        from splip_engine.data.transforms import normalise_batch

        return normalise_batch(pixels, spec)


@dataclass
class DecodedBatch:
    """Up to `batch_size` records of one unit: `ids` / `paths` / `metadata` describe the rows of
    `pixels`; the unit's problems among them are in `errors`. `last`: the unit's final batch."""

    unit_name: str
    unit_key: str | None              # Unit.key: the store marks it done after its last batch
    ids: list[str]
    paths: list[str]
    metadata: dict[str, list[str | None]]
    pixels: np.ndarray | None         # (n, S, S, 3) uint8; None until decoded when the decoder is not in_workers
    errors: list[dict[str, str]]      # RecordError.to_dict() of records that could not be read or decoded
    decode_s: float = 0.0             # CPU seconds the worker spent reading + decoding this batch
    last: bool = False
    sources: list[str | bytes] = field(default_factory=list)  # encoded sources, only while undecoded

    def decode_with(self, decoder: BatchDecoder, modality: str, spec) -> None:
        """Decode `sources` into `pixels` (dropping the rows that fail, into `errors`)."""
        start = time.process_time()
        self.pixels, failed = decoder.decode(self.sources, modality, spec)
        bad = dict(failed)
        for index, reason in failed:
            self.errors.append({"id": self.ids[index], "path": self.paths[index],
                                "key": self.metadata["key"][index] or "", "reason": reason})
        keep = [i for i in range(len(self.ids)) if i not in bad]
        self.ids = [self.ids[i] for i in keep]
        self.paths = [self.paths[i] for i in keep]
        self.metadata = {name: [values[i] for i in keep] for name, values in self.metadata.items()}
        self.sources = []
        self.decode_s += time.process_time() - start


def _batch_of(unit: Unit, records: list[Record], errors: list[RecordError], last: bool) -> DecodedBatch:
    """An undecoded batch of `records`."""
    return DecodedBatch(unit.name, unit.key, [r.id for r in records], [r.path for r in records],
                        {name: [getattr(r, name) for r in records] for name in METADATA_FIELDS}, None,
                        [e.to_dict() for e in errors], last=last, sources=[r.source for r in records])


def decode_unit(unit: Unit, options: InputOptions, modality: str, spec, batch_size: int,
                decoder: BatchDecoder) -> Iterator[DecodedBatch]:
    """The batches of one unit, in order (decoded when `decoder.in_workers`); at least one, the last
    flagged, so a consumer knows when a unit is complete even if it held no record."""
    set_budget(options.budget)  # this worker's (or Ray task's) vector renders get the job's budget
    records: list[Record] = []
    errors: list[RecordError] = []
    start = time.process_time()

    def flush(last: bool) -> DecodedBatch:
        nonlocal start
        batch = _batch_of(unit, records, errors, last)
        if decoder.in_workers:
            batch.decode_with(decoder, modality, spec)
        batch.decode_s = time.process_time() - start
        records.clear()
        errors.clear()
        start = time.process_time()
        return batch

    for item in read_unit(unit, options):
        (errors if isinstance(item, RecordError) else records).append(item)
        if len(records) == batch_size:
            yield flush(last=False)
    yield flush(last=True)


def default_workers() -> int:
    """Decode workers sized to the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass(frozen=True)
class _WorkerFailure:
    """An unexpected exception in a worker (a bug, not bad input): its unit and traceback."""

    unit: Unit
    trace: str


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the job dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent check between batches still applies
        pass


def _worker(tasks, results, parent: int, options: InputOptions, modality: str, spec, batch_size: int,
            decoder: BatchDecoder) -> None:
    """Decode worker loop: units from `tasks` (None = stop), batches into `results`."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's to handle
    while (unit := tasks.get()) is not None:
        try:
            for batch in decode_unit(unit, options, modality, spec, batch_size, decoder):
                if os.getppid() != parent:
                    return
                results.put(batch)
        except Exception:  # a bug: report it with its traceback, keep serving  # noqa: BLE001
            results.put(_WorkerFailure(unit, traceback.format_exc()))


class DecodePool:
    """`workers` decode processes over a stream of units (0 = decode in this process)."""

    def __init__(self, workers: int, options: InputOptions, modality: str, spec, batch_size: int,
                 decoder: BatchDecoder | None = None, units_ahead: int = 1):
        self.workers, self.options, self.modality, self.spec = workers, options, modality, spec
        self.batch_size, self.decoder = batch_size, decoder or BatchDecoder()
        self.units_ahead = units_ahead
        self.wait_s = 0.0  # time the consumer spent waiting for decoded batches

    def run(self, units: Iterable[Unit]) -> Iterator[DecodedBatch]:
        """Decoded batches of `units`; units are read in parallel, so batches of different units
        interleave (each batch says its unit, and the last one of each unit says so)."""
        if self.workers <= 0:
            for unit in units:
                for batch in decode_unit(unit, self.options, self.modality, self.spec, self.batch_size, self.decoder):
                    yield self._decoded(batch)
            return
        yield from self._run_pool(iter(units))

    def _decoded(self, batch: DecodedBatch) -> DecodedBatch:
        if batch.pixels is None:
            batch.decode_with(self.decoder, self.modality, self.spec)
        return batch

    def _run_pool(self, units: Iterator[Unit]) -> Iterator[DecodedBatch]:
        context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        tasks = context.Queue()
        results = context.Queue(maxsize=2 * self.workers + 2)  # decoded batches waiting: bounded memory
        args = (tasks, results, os.getpid(), self.options, self.modality, self.spec, self.batch_size, self.decoder)
        procs = [context.Process(target=_worker, args=args, daemon=True, name=f"splip-decode-{i}")
                 for i in range(self.workers)]
        for proc in procs:
            proc.start()
        stopped = True  # left early (Ctrl-C, an error, the consumer closed us): don't wait for units in progress
        try:
            in_flight = 0
            for unit in units:  # keep every worker busy with `units_ahead` more queued
                tasks.put(unit)
                in_flight += 1
                if in_flight >= self.workers * (1 + self.units_ahead):
                    in_flight -= yield from self._until_unit_done(results, procs)
            while in_flight:
                in_flight -= yield from self._until_unit_done(results, procs)
            stopped = False
        finally:
            for _ in procs:
                tasks.put(None)
            for proc in procs:
                proc.join(timeout=0 if stopped else 5)
                if proc.is_alive():
                    proc.kill()
            if stopped:
                tasks.cancel_join_thread()  # units no worker will read: don't block our exit on them
            tasks.close()
            results.close()

    def _until_unit_done(self, results, procs) -> Iterator[DecodedBatch]:
        """Yield batches until one unit's last batch has passed; returns 1 (units finished)."""
        while True:
            batch = self._next_result(results, procs)
            yield self._decoded(batch)
            if batch.last:
                return 1

    def _next_result(self, results, procs) -> DecodedBatch:
        start = time.perf_counter()
        while True:
            try:
                item = results.get(timeout=_POLL_S)
                break
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise SpLIPError(f"decode worker {dead[0].name} died (exit code {dead[0].exitcode}, e.g. killed "
                                     "for memory); re-run the same command to resume, with fewer --workers if "
                                     "memory is short") from None
        self.wait_s += time.perf_counter() - start
        if isinstance(item, _WorkerFailure):
            raise SpLIPError(f"decode worker failed on unit {item.unit.name} of the input (a bug; please report "
                             f"it):\n{item.trace}")
        return item
