"""Serve: the low-latency sketch -> photo search service over HTTP and gRPC (`splip-engine serve`).

- settings: ServeSettings, the batching / queue / request-limit / shutdown knobs
- batcher: MicroBatcher, dynamic micro-batching behind a bounded queue (Overloaded -> HTTP 503),
  one index per batch (swap_index takes effect from the next batch)
- service: SearchService, decode pool + batcher, readiness after warm-up, index reload
- metrics: ServeMetrics, counters and histograms in the Prometheus text format
- auth: the bearer token (file / $SPLIP_AUTH_TOKEN), the non-loopback refusal, BearerAuth middleware
- observe: RequestObserver, request ids, metrics and the JSON access log of every request
- bodies, errors: size-limited (and inflated) request bodies; error bodies per protocol
- tensors, infer, v2: the Open Inference Protocol (KServe v2) codec, the infer path both transports
  share, and its HTTP routes of model `splip`
- oip_proto, grpc_service: the protocol's gRPC messages (inference.proto) and GRPCInferenceService,
  attached to the app's lifespan (`serve --grpc-port`)
- search, ops, handlers: POST /search; /healthz, /metrics, /admin/reload; error responses
- page, thumbnails, static/: the draw-to-search page at / and GET /thumbnail?id= (resized, cached)
- results_page: the static results.html of `search --html` and the demo (no server needed)
- app: create_app(encoder, index, settings, token=, index_dir=), the FastAPI app registering them
- server: run_server(engine_dir, index_dir, settings, token=, no_auth=, store_dir=), checks +
  uvicorn (+ gRPC) + SIGHUP

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
