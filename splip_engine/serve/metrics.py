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


LATENCY_METRICS = {"/search": ("splip_search_latency", "POST /search"),
                   "/v2/models/splip/infer": ("splip_infer_latency", "POST /v2/models/splip/infer"),
                   "/inference.GRPCInferenceService/ModelInfer": ("splip_grpc_infer_latency", "gRPC ModelInfer")}
"""Routes whose successful latencies get a histogram and recent quantiles: metric name, what it times."""


class _Latency:
    """The latency histogram and the recent-latency window of one route."""

    def __init__(self) -> None:
        self.histogram = _Histogram(LATENCY_BUCKETS_S)
        self.recent: deque = deque(maxlen=RECENT_LATENCIES)  # seconds, latest successful requests

    def observe(self, seconds: float) -> None:
        self.histogram.observe(seconds)
        self.recent.append(seconds)

    def render(self, name: str, what: str) -> list[tuple[str, str, str, list[str]]]:
        quantiles = np.quantile(np.asarray(self.recent), QUANTILES) if self.recent else [math.nan] * len(QUANTILES)
        recent = f"{name}_recent_seconds"
        return [
            (f"{name}_seconds", "histogram", f"Latency of successful {what}, request in to response out.",
             self.histogram.render(f"{name}_seconds")),
            (recent, "summary", f"Quantiles of successful {what} latency over the last {RECENT_LATENCIES} requests.",
             [f'{recent}{{quantile="{q}"}} {_number(v)}' for q, v in zip(QUANTILES, quantiles)]
             + [f"{recent}_sum {_number(self.histogram.total)}", f"{recent}_count {self.histogram.count}"]),
        ]


class ServeMetrics:
    """Thread-safe counters: HTTP responses by path and status code, latency (histogram and
    p50/p90/p99 over recent requests) of each LATENCY_METRICS route, batch sizes, 503s, index
    reloads; the queue depth and the served index (version, size) are read live at render.
    A summary's _sum / _count are cumulative like the histogram's; its quantiles are recent."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0,
                 index_facts: Callable[[], tuple[int, int]] = lambda: (0, 0)):
        self._lock = threading.Lock()
        self._queue_depth = queue_depth
        self._index_facts = index_facts  # () -> (version, size) of the index being served
        self._responses: Counter[tuple[str, int]] = Counter()
        self._latency = {path: _Latency() for path in LATENCY_METRICS}
        self._batch_sizes = _Histogram(BATCH_SIZE_BUCKETS)
        self._overloaded = 0
        self._reloads: Counter[str] = Counter()

    def observe_response(self, path: str, status: int, seconds: float) -> None:
        """One HTTP response; successful latencies of LATENCY_METRICS routes feed their histogram
        and quantiles (fast refusals under overload would otherwise pull p50 down just when latency is worst)."""
        with self._lock:
            self._responses[(path, status)] += 1
            if status == 503:
                self._overloaded += 1
            if status == 200 and path in self._latency:
                self._latency[path].observe(seconds)

    def observe_batch(self, size: int) -> None:
        """One batch run by the micro-batcher, of `size` images."""
        with self._lock:
            self._batch_sizes.observe(size)

    def observe_reload(self, ok: bool) -> None:
        """One index reload (SIGHUP or POST /admin/reload), done or failed (the old index kept)."""
        with self._lock:
            self._reloads["ok" if ok else "failed"] += 1

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        version, size = self._index_facts()
        with self._lock:
            blocks = [
                ("splip_http_requests_total", "counter", "HTTP responses by path and status code.",
                 [f'splip_http_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self._responses.items())]),
                *(block for path, (name, what) in LATENCY_METRICS.items()
                  for block in self._latency[path].render(name, what)),
                ("splip_batch_size", "histogram", "Images per micro-batch (one encoder call + one index search).",
                 self._batch_sizes.render("splip_batch_size")),
                ("splip_queue_depth", "gauge", "Requests waiting in the batch queue.",
                 [f"splip_queue_depth {self._queue_depth()}"]),
                ("splip_overloaded_total", "counter", "Requests refused with HTTP 503 (batch queue full, or shutting down).",
                 [f"splip_overloaded_total {self._overloaded}"]),
                ("splip_index_version", "gauge", "Version of the gallery index being served (1 = built, +1 per update).",
                 [f"splip_index_version {version}"]),
                ("splip_index_size", "gauge", "Photos in the gallery index being served.", [f"splip_index_size {size}"]),
                ("splip_index_reloads_total", "counter", "Index reloads by result (failed: the old index kept serving).",
                 [f'splip_index_reloads_total{{result="{r}"}} {self._reloads[r]}' for r in ("ok", "failed")]),
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
