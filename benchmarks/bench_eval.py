"""retrieval_metrics at the protocol's scale: 10,000 sketch queries x 100,000 photos, D=512, 100 classes.

Run: .venv/bin/pytest benchmarks/bench_eval.py --benchmark-only
Runs once (pedantic, 1 round); extra_info records the peak RSS growth during the call.
"""
import os
import threading

import torch

from splip_engine.evaluation import retrieval_metrics

N_QUERIES, N_GALLERY, DIM, N_CLASSES = 10_000, 100_000, 512, 100


def _embeddings(n: int, centers: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """n float16 (n, D) embeddings around their class centres, and the labels (n,), made in blocks."""
    labels = torch.randint(0, len(centers), (n,), generator=generator)
    emb = torch.empty(n, centers.shape[1], dtype=torch.float16)
    for start in range(0, n, 10_000):
        block = labels[start : start + 10_000]
        noise = torch.randn(len(block), centers.shape[1], generator=generator)
        emb[start : start + len(block)] = (centers[block] + 2 * noise).half()
    return emb, labels


class _PeakRSS:
    """Samples this process's resident set size every 20 ms; .peak_growth in bytes."""

    def __enter__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_growth = self.peak - self.start

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())


def test_retrieval_metrics_10k_x_100k(benchmark):
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(N_CLASSES, DIM, generator=generator) / DIM**0.5 * 16  # (C, D): mAP@all ~ 0.5
    queries, q_labels = _embeddings(N_QUERIES, centers, generator)
    gallery, g_labels = _embeddings(N_GALLERY, centers, generator)

    with _PeakRSS() as rss:
        metrics = benchmark.pedantic(
            retrieval_metrics, args=(queries, q_labels, gallery, g_labels), rounds=1, iterations=1
        )
    benchmark.extra_info["peak_rss_growth_mb"] = round(rss.peak_growth / 2**20)
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark.extra_info.update({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    assert metrics["n_queries"] == N_QUERIES
