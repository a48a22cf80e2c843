"""SpLIP engine: zero-shot sketch-based image retrieval with prompts for a frozen CLIP.

Data flow (ENGINE.md): model/ + train + evaluation -> export/ (ONNX, TensorRT) ->
runtime/ (load_engine, batched embedding) -> index/ (store, FAISS) -> serve/.
- config: SpLIPConfig
- model/: the SpLIP model on open_clip and build_model
- checkpoint: save_checkpoint / load_checkpoint
- losses, train, pretrain: the SpLIP objective, the training loop, a tiny stand-in CLIP
- evaluation, protocol: the literature's metrics and the ZS / GZS / FG-ZS protocol
- retrieval, demo, bench: search + HTML results, the end-to-end demo, the benchmark runner
- data/: image loading, preprocessing, datasets, splits, the mini dataset
- errors: SpLIPError, the user-facing error family
- optional: optional heavy dependencies, and the environment that keeps them offline
- io_utils: atomic writes
- cli/: the `splip-engine` command
"""
from splip_engine.optional import keep_offline

keep_offline()  # first: before anything this process or its children run loads ONNX Runtime or Ray

from splip_engine._version import __version__  # noqa: E402
from splip_engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from splip_engine.config import SpLIPConfig  # noqa: E402
from splip_engine.errors import SpLIPError  # noqa: E402
from splip_engine.model import SpLIP, build_model  # noqa: E402

__all__ = [
    "SpLIP",
    "SpLIPConfig",
    "SpLIPError",
    "__version__",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
