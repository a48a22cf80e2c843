"""ServeSettings: every knob of the search service (batching, queue bound, request limits)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of `splip-engine serve`; validated on construction (ValueError names the field).

    max_batch: most requests embedded together; max_wait_ms: longest a request waits for others to
    join its batch; queue_size: requests waiting for a batch before new ones get HTTP 503;
    max_body_bytes: largest request body (HTTP 413 above); max_k: largest k (HTTP 422 above);
    decode_workers: threads decoding / preprocessing raster uploads off the event loop;
    render_workers: SVG / QuickDraw uploads rendered at once (each in a child process under the
    decode budget; more slots than bombs in flight let an ordinary SVG share the CPU with them at
    once instead of queueing behind them; each slot may use the memory budget); render_queue: vector uploads waiting or rendering before new ones get HTTP 503;
    graceful_shutdown_s: on SIGTERM / Ctrl-C, how long in-flight requests may take to finish
    (the server stops accepting connections at once).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # the Open Inference Protocol over gRPC on host:grpc_port (None: off)
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256
    max_body_bytes: int = 10 * 1024 * 1024
    max_k: int = 1000
    decode_workers: int = 2
    render_workers: int = 8
    render_queue: int = 64
    graceful_shutdown_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "max_body_bytes", "max_k", "decode_workers", "render_workers",
                     "render_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeSettings.{name}={value!r}: must be an int >= 1")
        for name in ("port", "grpc_port"):
            value = getattr(self, name)
            if name == "grpc_port" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"ServeSettings.{name}={value!r}: must be an int in 0..65535 (0 = any free port)")
        from splip_engine.index.gallery import MAX_K

        if self.max_k > MAX_K:
            raise ValueError(f"ServeSettings.max_k={self.max_k}: the gallery index searches at most k={MAX_K}")
        for name in ("max_wait_ms", "graceful_shutdown_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"ServeSettings.{name}={value!r}: must be a number >= 0")
