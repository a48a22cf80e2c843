"""`splip-engine serve`: the HTTP sketch -> photo search service over an engine and an index."""
from __future__ import annotations

import click

from splip_engine.cli.options import backend_option, device_option


@click.command("serve")
@click.option("--engine", "engine_dir", required=True, type=click.Path(), help="Engine dir from `export` (or a checkpoint dir).")
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index dir from `index`, built with this engine.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 = every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(min=1),
              help="Most concurrent requests embedded and searched together.")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Longest a request waits for others to join its batch.")
@click.option("--queue-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Requests waiting for a batch before new ones get HTTP 503.")
@click.option("--max-body-mb", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body in MiB (HTTP 413 above).")
@click.option("--max-k", default=1000, show_default=True, type=click.IntRange(min=1), help="Largest k a request may ask for.")
@click.option("--decode-workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Threads decoding and preprocessing uploads.")
@backend_option
@device_option
def command(engine_dir, index_dir, host, port, max_batch, max_wait_ms, queue_size, max_body_mb, max_k,
            decode_workers, backend, device):
    """Serve top-k photo search for uploaded sketches over HTTP until Ctrl-C.

    POST /search (multipart field `image`, optional `k` and `modality`; or a raw image/* body
    with ?k=&modality=) answers {"results": [{"rank", "id", "score", "path"}], "k", "modality",
    "latency_ms"} ("path" where the index knows it). Concurrent requests are micro-batched; a
    full queue answers 503 with Retry-After. GET /healthz and GET /metrics (Prometheus text).

    \b
    Example:
      splip-engine serve --engine engines/ --index index/ --port 8000
      curl -F image=@sketch.png -F k=5 http://127.0.0.1:8000/search
      curl --data-binary @sketch.png -H 'Content-Type: image/png' 'http://127.0.0.1:8000/search?k=5'
    """
    import logging

    from splip_engine.serve import ServeSettings, run_server

    settings = ServeSettings(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             queue_size=queue_size, max_body_bytes=int(max_body_mb * 1024 * 1024),
                             max_k=max_k, decode_workers=decode_workers)
    run_server(engine_dir, index_dir, settings, backend=backend, device=device,
               access_log=logging.getLogger().getEffectiveLevel() <= logging.INFO)  # -v logs each request
