"""The offline embedding job: inputs -> engine -> store, resumable, with per-phase timings."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from splip_engine.runtime.base import Encoder

logger = logging.getLogger(__name__)


@dataclass
class EmbedReport:
    """What one `embed` run did. Times are seconds; decode is summed over worker processes."""

    store: str
    total_inputs: int
    already_done: int
    embedded: int = 0
    failed: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"decode+preprocess": 0.0, "encode": 0.0,
                                                               "write": 0.0, "wall": 0.0})

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.timings["wall"] if self.timings["wall"] else 0.0


def engine_info(encoder: Encoder) -> dict:
    """Identity of the engine written into a store / index, so foreign mixes are refused."""
    return {"engine_hash": encoder.manifest.get("engine_hash"), "embedding_dim": encoder.embedding_dim,
            "precision": encoder.manifest.get("precision"), "image_size": encoder.image_size}


def pending_items(items: list[tuple[str, str]], writer) -> list[tuple[str, str]]:
    """The (id, path) pairs the store neither holds nor lists as failed (a re-run resumes where it
    stopped; failed inputs are retried only with a fresh store)."""
    done, failed = writer.done_ids(), writer.error_paths()
    return [(i, p) for i, p in items if i not in done and p not in failed]


def write_rows(writer, embeddings, good: list[tuple[str, str]], errors: list[tuple[str, str]]) -> None:
    """Append the embedded (id, path) rows and the failed (path, reason) pairs to the store."""
    if good:
        writer.add(embeddings, [i for i, _ in good], [p for _, p in good])
    if errors:
        writer.add_errors(errors)


def run_embed(encoder: Encoder, source: str | Path, out: str | Path, modality: str = "photo",
              batch_size: int = 64, workers: int = 2, shard_size: int = 4096,
              progress: bool = True, decode: str = "auto") -> EmbedReport:
    """Embed every image of `source` (dir / file list / parquet) into the store `out`.

    Bad inputs are skipped and listed in the store's errors file; a re-run after a crash embeds
    only what is missing, so every good input ends up exactly once in the store.
    `decode`: see runtime/gpu_decode.pixel_batches (auto: nvJPEG when the encoder is on CUDA).
    """
    from tqdm import tqdm

    from splip_engine.index.store import StoreWriter
    from splip_engine.runtime.inputs import resolve_inputs
    from splip_engine.runtime.gpu_decode import pixel_batches  # hook (#13): GPU decode for GPU jobs

    start = time.perf_counter()
    items = resolve_inputs(source)
    with StoreWriter(out, dim=encoder.embedding_dim, modality=modality, engine_info=engine_info(encoder),
                     shard_size=shard_size) as writer:
        todo = pending_items(items, writer)
        report = EmbedReport(store=str(out), total_inputs=len(items), already_done=len(items) - len(todo))
        # closed on an error too, so the CLI's error line starts on a line of its own
        with tqdm(total=len(todo), unit="img", desc=f"embed {modality}", disable=not progress) as bar:
            for batch in pixel_batches(todo, modality, encoder, batch_size, workers=workers, decode=decode):
                report.timings["decode+preprocess"] += batch.decode_s
                t0 = time.perf_counter()
                embeddings = encoder.embed_pixels(batch.pixels, modality)
                t1 = time.perf_counter()
                good = [batch.items[i] for i in batch.good]
                write_rows(writer, embeddings, good, [(batch.items[i][1], reason) for i, reason in batch.errors])
                report.timings["encode"] += t1 - t0
                report.timings["write"] += time.perf_counter() - t1
                report.embedded += len(good)
                report.failed += len(batch.errors)
                bar.update(len(batch.items))
    report.timings["wall"] = time.perf_counter() - start
    return report
