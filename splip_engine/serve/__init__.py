"""Serve: the low-latency HTTP sketch -> photo search service (`splip-engine serve`).

- settings: ServeSettings, the batching / queue / request-limit knobs
- batcher: MicroBatcher, dynamic micro-batching behind a bounded queue (Overloaded -> HTTP 503)
- metrics: ServeMetrics, counters and histograms in the Prometheus text format
- app: create_app(encoder, index, settings), the FastAPI app (/search, /healthz, /metrics)
- server: run_server(engine_dir, index_dir, settings), load + check + uvicorn

`create_app` and `run_server` need the `serve` extra (FastAPI, uvicorn); importing this package does not.
"""
from splip_engine.serve.batcher import MicroBatcher, Overloaded, ServiceUnavailable
from splip_engine.serve.server import run_server
from splip_engine.serve.settings import ServeSettings

__all__ = ["MicroBatcher", "Overloaded", "ServeSettings", "ServiceUnavailable", "create_app", "run_server"]


def __getattr__(name: str):
    """`create_app` is imported on first use, so the package imports without FastAPI."""
    if name == "create_app":
        from splip_engine.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
