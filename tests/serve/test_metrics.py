"""ServeMetrics: exact counts, cumulative buckets and quantiles in the Prometheus text format."""
from __future__ import annotations

import numpy as np

from splip_engine.serve.metrics import ServeMetrics


def _samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}


def test_counts_buckets_and_quantiles_are_exact():
    metrics = ServeMetrics(queue_depth=lambda: 7)
    latencies = np.arange(1, 101) / 1000  # 1..100 ms
    for seconds in latencies:
        metrics.observe_response("/search", 200, seconds)
    metrics.observe_response("/search", 503, 0.0001)  # refusals: counted, not in the latency stats
    metrics.observe_response("/search", 400, 0.0001)
    metrics.observe_response("/healthz", 200, 0.0001)
    for size in (1, 3, 3, 32):
        metrics.observe_batch(size)
    samples = _samples(metrics.render())
    assert samples['splip_http_requests_total{path="/search",code="200"}'] == 100
    assert samples['splip_http_requests_total{path="/search",code="503"}'] == 1
    assert samples['splip_http_requests_total{path="/healthz",code="200"}'] == 1
    assert samples["splip_overloaded_total"] == 1 and samples["splip_queue_depth"] == 7
    assert samples['splip_search_latency_seconds_bucket{le="0.01"}'] == 10  # 1..10 ms
    assert samples['splip_search_latency_seconds_bucket{le="+Inf"}'] == samples["splip_search_latency_seconds_count"] == 100
    np.testing.assert_allclose(samples["splip_search_latency_seconds_sum"], latencies.sum())
    for q in ("0.5", "0.99"):
        np.testing.assert_allclose(samples[f'splip_search_latency_recent_seconds{{quantile="{q}"}}'],
                                   np.quantile(latencies, float(q)))
    assert [samples[f'splip_batch_size_bucket{{le="{b}"}}'] for b in ("1.0", "2.0", "4.0", "32.0", "+Inf")] == [1, 1, 3, 4, 4]
    assert samples["splip_batch_size_sum"] == 39


def test_no_requests_yet_renders_nan_quantiles():
    samples = _samples(ServeMetrics().render())
    assert np.isnan(samples['splip_search_latency_recent_seconds{quantile="0.5"}'])
    assert samples["splip_search_latency_seconds_count"] == 0
