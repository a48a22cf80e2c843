"""Batch pipeline: decode + preprocess in worker processes, overlapped with inference through a
bounded prefetch queue (the accelerator never waits for JPEG decoding when workers keep up)."""
from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np


@dataclass
class PixelBatch:
    """One preprocessed batch: `pixels` (n, 3, S, S) float32 for the good items of `items`."""

    items: list                    # the (id, path) pairs of this batch, in order
    pixels: np.ndarray             # (n_good, 3, S, S) float32
    good: list[int]                # positions in `items` of the rows of `pixels`
    errors: list[tuple[int, str]] = field(default_factory=list)  # (position in items, reason)
    decode_s: float = 0.0          # worker time spent loading + preprocessing


def _load_batch(items: Sequence[tuple[str, str]], modality: str, spec) -> PixelBatch:
    from splip_engine.data.transforms import preprocess_batch

    start = time.perf_counter()
    pixels, errors = preprocess_batch([path for _, path in items], modality, spec)
    bad = {i for i, _ in errors}
    good = [i for i in range(len(items)) if i not in bad]
    return PixelBatch(list(items), pixels, good, errors, time.perf_counter() - start)


def iter_pixel_batches(items: Sequence[tuple[str, str]], modality: str, spec, batch_size: int,
                       workers: int = 2, prefetch: int = 4) -> Iterator[PixelBatch]:
    """Yield PixelBatches of `items` in order; `workers=0` decodes in this process.

    At most `prefetch` batches are decoded ahead, so memory stays bounded on any input size.
    """
    chunks = (items[i:i + batch_size] for i in range(0, len(items), batch_size))
    if workers <= 0:
        for chunk in chunks:
            yield _load_batch(chunk, modality, spec)
        return
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_load_batch, chunk, modality, spec))
            if len(pending) >= prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
