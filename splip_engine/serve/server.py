"""run_server: load an engine and a gallery index, check they fit, serve them with uvicorn."""
from __future__ import annotations

import logging
from pathlib import Path

from splip_engine.errors import SpLIPError
from splip_engine.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def run_server(engine_dir: str | Path, index_dir: str | Path, settings: ServeSettings | None = None,
               backend: str = "auto", device: str = "auto", access_log: bool = False) -> None:
    """Serve `index_dir` searched with the engine `engine_dir` until interrupted (Ctrl-C / SIGTERM);
    `access_log` logs one line per request.

    One process: the micro-batcher batches across all its connections, so run more replicas
    behind a load balancer to scale out rather than uvicorn workers.
    """
    try:
        import uvicorn
    except ImportError as e:
        raise SpLIPError("serving needs FastAPI and uvicorn: pip install 'splip-engine[serve]'") from e
    from splip_engine.index import GalleryIndex
    from splip_engine.runtime import load_engine
    from splip_engine.serve.app import create_app

    settings = settings or ServeSettings()
    index = GalleryIndex.load(index_dir)
    with load_engine(engine_dir, backend=backend, device=device, batch_size=settings.max_batch) as encoder:
        index.check_compatible(encoder.manifest)
        app = create_app(encoder, index, settings)
        logger.info("serving %s (%d photos) with %s on http://%s:%d", index_dir, len(index), engine_dir,
                    settings.host, settings.port)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=access_log)
