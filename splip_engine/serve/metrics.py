"""ServeMetrics: request / batch / queue counters of the service, rendered in the Prometheus text
format (version 0.0.4) by hand, so serving needs no metrics library."""
from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence

import numpy as np

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUANTILES = (0.5, 0.9, 0.99)
RECENT_LATENCIES = 4096  # the summary's quantiles are over this many latest /search requests


class _Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: bucket `le` counts values <= le)."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.total += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        lines += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {_number(self.total)}",
                  f"{name}_count {self.count}"]
        return lines


class ServeMetrics:
    """Thread-safe counters: HTTP responses by path and status code, /search latency (histogram and
    p50/p90/p99 over recent requests), batch sizes, 503s; the queue depth is read live at render.
    The summary's _sum / _count are cumulative like the histogram's; its quantiles are recent."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0):
        self._lock = threading.Lock()
        self._queue_depth = queue_depth
        self._responses: Counter[tuple[str, int]] = Counter()
        self._latency = _Histogram(LATENCY_BUCKETS_S)
        self._recent = deque(maxlen=RECENT_LATENCIES)  # seconds, latest /search requests
        self._batch_sizes = _Histogram(BATCH_SIZE_BUCKETS)
        self._overloaded = 0

    def observe_response(self, path: str, status: int, seconds: float) -> None:
        """One HTTP response; successful /search latencies feed the latency histogram and quantiles
        (fast refusals under overload would otherwise pull p50 down just when latency is worst)."""
        with self._lock:
            self._responses[(path, status)] += 1
            if status == 503:
                self._overloaded += 1
            if path == "/search" and status == 200:
                self._latency.observe(seconds)
                self._recent.append(seconds)

    def observe_batch(self, size: int) -> None:
        """One batch run by the micro-batcher, of `size` requests."""
        with self._lock:
            self._batch_sizes.observe(size)

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        with self._lock:
            quantiles = np.quantile(np.asarray(self._recent), QUANTILES) if self._recent else [math.nan] * len(QUANTILES)
            blocks = [
                ("splip_http_requests_total", "counter", "HTTP responses by path and status code.",
                 [f'splip_http_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self._responses.items())]),
                ("splip_search_latency_seconds", "histogram", "Latency of successful POST /search, request in to response out.",
                 self._latency.render("splip_search_latency_seconds")),
                ("splip_search_latency_recent_seconds", "summary",
                 f"Quantiles of successful POST /search latency over the last {RECENT_LATENCIES} requests.",
                 [f'splip_search_latency_recent_seconds{{quantile="{q}"}} {_number(v)}' for q, v in zip(QUANTILES, quantiles)]
                 + [f"splip_search_latency_recent_seconds_sum {_number(self._latency.total)}",
                    f"splip_search_latency_recent_seconds_count {self._latency.count}"]),
                ("splip_batch_size", "histogram", "Requests per micro-batch (one encoder call + one index search).",
                 self._batch_sizes.render("splip_batch_size")),
                ("splip_queue_depth", "gauge", "Requests waiting in the batch queue.",
                 [f"splip_queue_depth {self._queue_depth()}"]),
                ("splip_overloaded_total", "counter", "Requests refused with HTTP 503 (batch queue full, or shutting down).",
                 [f"splip_overloaded_total {self._overloaded}"]),
            ]
        lines = []
        for name, kind, help_text, samples in blocks:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """A sample value as Prometheus writes it (NaN, +Inf, shortest float repr)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
