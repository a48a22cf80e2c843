"""run_server: check the exposure, load an engine and a gallery index, check they fit, and serve
them with uvicorn: JSON access log, SIGHUP reloads the index, SIGTERM / Ctrl-C drain gracefully."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from splip_engine.errors import SpLIPError
from splip_engine.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def run_server(engine_dir: str | Path, index_dir: str | Path, settings: ServeSettings | None = None,
               backend: str = "auto", device: str = "auto", *, token: str | None = None, no_auth: bool = False,
               access_log: bool = True, store_dir: str | Path | None = None) -> None:
    """Serve `index_dir` searched with the engine `engine_dir` until SIGTERM / Ctrl-C, which stop
    accepting connections and let in-flight requests finish (up to settings.graceful_shutdown_s).

    token: the bearer token every request but liveness needs; without one, a non-loopback
    `settings.host` is refused unless `no_auth`. access_log: one JSON line per request on stderr.
    SIGHUP reloads `index_dir` (after `splip-engine index --update`) with no failed request.
    store_dir: the embedding store the index was built from; hits carry its metadata on request.
    settings.grpc_port: also serve the Open Inference Protocol over gRPC there (same host and token).
    One process: the micro-batcher batches across all its connections, so run more replicas
    behind a load balancer to scale out rather than uvicorn workers.
    """
    from splip_engine.serve.auth import check_exposure

    settings = settings or ServeSettings()
    check_exposure(settings.host, token, no_auth)  # before spending time loading anything
    try:
        import uvicorn
    except ImportError as e:
        raise SpLIPError("serving needs FastAPI and uvicorn: pip install 'splip-engine[serve]'") from e
    from splip_engine.index import GalleryIndex
    from splip_engine.runtime import load_engine
    from splip_engine.serve.app import create_app

    _configure_access_log(access_log)
    index = GalleryIndex.load(index_dir)
    with load_engine(engine_dir, backend=backend, device=device, batch_size=settings.max_batch) as encoder:
        index.check_compatible(encoder.manifest)
        app = create_app(encoder, index, settings, token=token, index_dir=index_dir)
        if store_dir is not None:
            app.state.service.use_store(store_dir)
        if settings.grpc_port is not None:
            from splip_engine.serve.grpc_service import attach_grpc

            attach_grpc(app, settings.host, settings.grpc_port, token)
        _reload_on_sighup(app.state.service)
        logger.info("serving %s (%d photos, version %d) with %s on http://%s:%d%s (%s)", index_dir, len(index),
                    index.version, engine_dir, settings.host, settings.port,
                    "" if settings.grpc_port is None else f" and gRPC port {settings.grpc_port}",
                    "bearer token required" if token else "no authentication")
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                    timeout_graceful_shutdown=settings.graceful_shutdown_s)


def _configure_access_log(enabled: bool) -> None:
    """The access logger writes its JSON lines bare to stderr (not through the root format)."""
    from splip_engine.serve.observe import ACCESS_LOGGER

    log = logging.getLogger(ACCESS_LOGGER)
    log.propagate = False
    log.handlers[:] = []
    if enabled:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        log.setLevel(logging.CRITICAL + 1)


def _reload_on_sighup(service) -> None:
    """SIGHUP reloads the index in a background thread (the old version answers meanwhile)."""

    def reload_logged() -> None:
        try:
            service.reload()
        except SpLIPError as e:
            logger.error("SIGHUP: %s", e)

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(target=reload_logged, name="splip-reload",
                                                                         daemon=True).start())
