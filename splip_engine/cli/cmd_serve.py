"""`splip-engine serve`: the HTTP sketch -> photo search service over an engine and an index."""
from __future__ import annotations

from pathlib import Path

import click

from splip_engine.cli.options import backend_option, decode_budget_options, device_option


@click.command("serve")
@click.option("--engine", "engine_dir", required=True, type=click.Path(), help="Engine dir from `export` (or a checkpoint dir).")
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index dir from `index`, built with this engine.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 = every interface: needs --auth-token-file or --no-auth).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--grpc-port", type=click.IntRange(0, 65535),
              help="Also serve the Open Inference Protocol over gRPC (tritonclient.grpc, KServe) on this port "
                   "of --host (same model, limits and token). Off by default.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False),
              help="Embedding store the index was built from: hits carry its caption / path / json when asked "
                   "(metadata=true on /search, parameter metadata on v2 and gRPC).")
@click.option("--auth-token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File whose first line is the bearer token every request but /v2/health/live must send "
                   "(Authorization: Bearer <token>); or set $SPLIP_AUTH_TOKEN.")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback address without a token (something in front authenticates).")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(min=1),
              help="Most images embedded and searched together (and per v2 infer request).")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Longest a request waits for others to join its batch.")
@click.option("--queue-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Requests waiting for a batch before new ones get HTTP 503.")
@click.option("--max-body-mb", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body in MiB (HTTP 413 above).")
@click.option("--max-k", default=1000, show_default=True, type=click.IntRange(min=1), help="Largest k a request may ask for.")
@click.option("--decode-workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Threads decoding and preprocessing uploads.")
@click.option("--graceful-shutdown-s", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="On SIGTERM / Ctrl-C, how long in-flight requests may take to finish.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One JSON line per request on stderr (id, path, status, latency, batch size; never the image or token).")
@backend_option
@device_option
@decode_budget_options
def command(engine_dir, index_dir, host, port, grpc_port, store_dir, auth_token_file, no_auth, max_batch, max_wait_ms, queue_size,
            max_body_mb, max_k, decode_workers, graceful_shutdown_s, access_log, backend, device):
    """Serve top-k photo search for uploaded sketches over HTTP until SIGTERM / Ctrl-C.

    POST /search (multipart field `image`, optional `k` and `modality`; or a raw image/*,
    application/json or application/x-ndjson body with ?k=&modality=) answers {"results":
    [{"rank", "id", "score", "path"}], "k", "modality", "index_version", "latency_ms"}; with
    --store and metadata=true each hit also carries its stored "metadata". The Open Inference
    Protocol (KServe v2, tritonclient) serves model `splip` under /v2, and over gRPC with
    --grpc-port. Concurrent
    requests are micro-batched; a full queue answers 503 with Retry-After. GET /healthz,
    GET /metrics (Prometheus). After `splip-engine index --update`, SIGHUP or POST /admin/reload
    switches to the new index version without failing a request. Open http://HOST:PORT/ in a
    browser to draw a sketch and see the results as you draw (GET /thumbnail?id= serves the
    gallery photos of the index; with a token the page asks for it once).

    \b
    Example:
      splip-engine serve --engine engines/ --index index/ --port 8000     # then open http://127.0.0.1:8000/
      curl -F image=@sketch.png -F k=5 http://127.0.0.1:8000/search
      splip-engine serve --engine engines/ --index index/ --store store/ --grpc-port 8001
      curl -F image=@sketch.png -F metadata=true http://127.0.0.1:8000/search
      openssl rand -hex 32 > token && splip-engine serve --engine engines/ --index index/ \\
          --host 0.0.0.0 --auth-token-file token
      curl -H "Authorization: Bearer $(cat token)" --data-binary @sketch.png \\
          -H 'Content-Type: image/png' 'http://HOST:8000/search?k=5'
      kill -HUP <pid>          # after `splip-engine index --update ...`: serve the new version
    """
    from splip_engine.serve import ServeSettings, run_server
    from splip_engine.serve.auth import load_token

    settings = ServeSettings(host=host, port=port, grpc_port=grpc_port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             queue_size=queue_size, max_body_bytes=int(max_body_mb * 1024 * 1024),
                             max_k=max_k, decode_workers=decode_workers, graceful_shutdown_s=graceful_shutdown_s)
    run_server(engine_dir, index_dir, settings, backend=backend, device=device, token=load_token(auth_token_file),
               no_auth=no_auth, access_log=access_log, store_dir=store_dir)
