"""ONNX -> TensorRT plans on TensorRT 10.x and 11.x: a throughput plan (batch 1..max) and a batch-1
latency plan per tower, a timing cache keyed by GPU + TensorRT version, fusion read from the
engine inspector, and a runner that executes a plan on torch CUDA tensors (the parity gate's).

Typing, chosen by the installed version (`plan_typing`):
- "strong": the network is strongly typed and built from the fp16 ONNX (export/precision.py,
  LayerNorm and the final normalisation in float32, Softmax in fp16 so TensorRT can fuse
  attention). TensorRT 11 removed weak typing: `BuilderFlag.FP16` and
  `PREFER_PRECISION_CONSTRAINTS` are gone and every network is strongly typed, the
  `STRONGLY_TYPED` creation flag being ignored
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html,
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html).
  On 10.x it needs `1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html).
  The default from 10.12 on, where NVIDIA deprecated weak typing
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/getting-started/release-notes-10/10.12.0.html), and on 11:
  the plan then computes in exactly the precisions of the fp16 ONNX engine.
- "weak" (10.x only, the default before 10.12): the fp32 ONNX with `BuilderFlag.FP16` and
  `PREFER_PRECISION_CONSTRAINTS`, normalisation / reduction layers pinned to float32.
Every TensorRT failure is a SpLIPError naming the TensorRT version and the step that failed.
TensorRT builds from the unfused (`attention="math"`) graph: its parser has no ORT contrib ops.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from splip_engine.errors import SpLIPError

from .graph import INPUT_NAME, OUTPUT_NAME
from .tensorrt_inspect import classify_fusion

logger = logging.getLogger(__name__)

TENSORRT_OPSET = 18
"""Opset of the graph handed to TensorRT's parser (the exporter's native opset, parsed by every TensorRT 10)."""
SUPPORTED_MAJORS = (10, 11)
"""TensorRT major versions checked against NVIDIA's Python API docs (the `gpu` extra pins >=10,<12)."""
TYPINGS = ("auto", "strong", "weak")
_STRONG_DEFAULT_FROM = (10, 12)
TIMING_CACHE_PREFIX = "timing."


@dataclass(frozen=True)
class PlanProfile:
    """One optimization profile: batch sizes the plan accepts (min..max) and tunes for (opt)."""

    name: str
    min_batch: int
    opt_batch: int
    max_batch: int


def plan_profiles(max_batch: int) -> list[PlanProfile]:
    """The two plans per tower: throughput (1 / max / max) and latency (1 / 1 / 1)."""
    return [PlanProfile("throughput", 1, max_batch, max_batch), PlanProfile("latency", 1, 1, 1)]


def _version_tuple(version: str) -> tuple[int, int]:
    numbers = re.findall(r"\d+", version)
    if len(numbers) < 2:
        raise SpLIPError(f"TensorRT version {version!r} is not MAJOR.MINOR[.PATCH]")
    return int(numbers[0]), int(numbers[1])


def import_tensorrt() -> ModuleType:
    """The tensorrt module, refused unless its major version is one of SUPPORTED_MAJORS."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise SpLIPError("TensorRT is not installed (pip install 'splip-engine[gpu]' on a CUDA machine)") from e
    major, _ = _version_tuple(trt.__version__)
    if major not in SUPPORTED_MAJORS:
        raise SpLIPError(f"TensorRT {trt.__version__} is not supported: splip-engine builds with TensorRT "
                         f"{' or '.join(f'{m}.x' for m in SUPPORTED_MAJORS)} (pip install 'tensorrt>=10,<12')")
    return trt


def tensorrt_unavailable() -> str | None:
    """None when a supported TensorRT and a CUDA GPU are usable, else the reason in one line."""
    try:
        import_tensorrt()
    except SpLIPError as e:
        return str(e)
    import torch

    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible"
    return None


def tensorrt_version() -> str:
    return import_tensorrt().__version__


def plan_typing(version: str, requested: str = "auto") -> str:
    """"strong" or "weak" for TensorRT `version` (see the module docstring); a weak build on 11
    is refused, since TensorRT 11 has no weak typing."""
    if requested not in TYPINGS:
        raise SpLIPError(f"tensorrt typing={requested!r}: choose one of {TYPINGS}")
    major, minor = _version_tuple(version)
    if requested == "weak" and major >= 11:
        raise SpLIPError(f"TensorRT {version} builds strongly typed networks only (BuilderFlag.FP16 was removed in "
                         "11.0): use --tensorrt-typing auto or strong")
    if requested != "auto":
        return requested
    return "strong" if (major, minor) >= _STRONG_DEFAULT_FROM else "weak"


@contextlib.contextmanager
def _step(version: str, step: str) -> Iterator[None]:
    """Turn whatever TensorRT raises during `step` into a SpLIPError naming the version and step."""
    try:
        yield
    except SpLIPError:
        raise
    except Exception as e:  # TensorRT's bindings raise TypeError / RuntimeError / AttributeError
        raise SpLIPError(f"TensorRT {version} failed while {step}: {type(e).__name__}: {e}") from e


@functools.cache
def _trt_logger(trt: ModuleType):
    """One logger per process (TensorRT treats it as a singleton) that keeps the last errors, so a
    failed step can quote them, and forwards warnings to logging."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors = (self.errors + [msg])[-5:]
                logger.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                logger.warning("TensorRT: %s", msg)

    return _Logger()


def _last_errors(log) -> str:
    return "; ".join(log.errors) if log.errors else "no error message from TensorRT"


def _network_flags(trt: ModuleType, version: str, typing: str) -> int:
    """create_network flags: strong typing needs the flag on 10.x; on 11 it is ignored (pass 0)."""
    if typing == "weak" or _version_tuple(version)[0] >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _weak_fp16(trt: ModuleType, network, config) -> None:
    """TensorRT 10 weak typing: fp16 kernels allowed, LayerNorm / L2-norm statistics kept float32."""
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    for i in range(network.num_layers):  # these overflow in fp16
        layer = network.get_layer(i)
        if layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.REDUCE):
            layer.precision = trt.float32


def plan_onnx(graph, fp16: bool, typing: str):
    """The ONNX graph TensorRT builds from, given the fp32 `attention="math"` tower graph: the
    fp16 conversion (Softmax kept fp16, see precision.TENSORRT_FP16_BLOCKED_OPS) for a strongly
    typed fp16 plan, else the fp32 graph itself; checked to be valid ONNX."""
    from .precision import TENSORRT_FP16_BLOCKED_OPS, convert_precision
    from .validate import check_onnx

    engine = convert_precision(graph, "fp16", TENSORRT_FP16_BLOCKED_OPS) if fp16 and typing == "strong" else graph
    check_onnx(engine, f"the TensorRT input graph ({'fp16' if engine is not graph else 'fp32'}, {typing} typing)")
    return engine


def build_plan(onnx_bytes: bytes, image_size: int, profile: PlanProfile, fp16: bool, typing: str,
               timing_cache: bytes = b"") -> tuple[bytes, bytes]:
    """Build one serialized plan from ONNX bytes (fp16 ONNX for a strongly typed fp16 plan, fp32
    ONNX otherwise); returns (plan, updated timing cache). `timing_cache` must come from this GPU
    and TensorRT version (`timing_cache_name`): a mismatch is refused, not ignored."""
    trt = import_tensorrt()
    version = trt.__version__
    log = _trt_logger(trt)
    log.errors = []
    with _step(version, "creating the builder and network"):
        builder = trt.Builder(log)
        network = builder.create_network(_network_flags(trt, version, typing))
        parser = trt.OnnxParser(network, log)
    with _step(version, "parsing the ONNX graph"):
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise SpLIPError(f"TensorRT {version} failed while parsing the ONNX graph: {errors or _last_errors(log)}")
    with _step(version, f"configuring the {profile.name} build ({typing} typing)"):
        config = builder.create_builder_config()
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 layers must meet the fp32 parity bound
        if fp16 and typing == "weak":
            _weak_fp16(trt, network, config)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer types + tactics for the fusion check
        shape = (3, image_size, image_size)
        optimization = builder.create_optimization_profile()
        optimization.set_shape(INPUT_NAME, (profile.min_batch, *shape), (profile.opt_batch, *shape),
                               (profile.max_batch, *shape))
        config.add_optimization_profile(optimization)
    with _step(version, "loading the timing cache"):
        # None: TensorRT could not read the bytes at all (a cache of another version's format)
        cache = config.create_timing_cache(timing_cache)
        # ignore_mismatch=False: another device's cache is an error
        if cache is None or not config.set_timing_cache(cache, False):
            why = "unreadable" if cache is None else _last_errors(log)
            raise SpLIPError(f"TensorRT {version} refused the timing cache ({why}): "
                             "it was written on another GPU or TensorRT version; delete it to rebuild from scratch")
    with _step(version, f"building the {profile.name} plan"):
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise SpLIPError(f"TensorRT {version} failed while building the {profile.name} plan: {_last_errors(log)}")
        updated = bytes(config.get_timing_cache().serialize())
    return bytes(plan), updated


def timing_cache_name(gpu_name: str, version: str) -> str:
    """Engine-dir file of the timing cache for one GPU model and TensorRT version: caches are
    device- and version-specific, so each pair has its own file and none is read by another."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu_name}-trt{version}").strip("-")
    return f"{TIMING_CACHE_PREFIX}{slug}.cache"


def current_timing_cache_key() -> dict[str, str]:
    """{"gpu": this GPU's name, "tensorrt": the installed version, "file": its cache file name}."""
    import torch

    gpu, version = torch.cuda.get_device_name(), tensorrt_version()
    return {"gpu": gpu, "tensorrt": version, "file": timing_cache_name(gpu, version)}


def load_timing_cache(engine_dir: Path, key: dict[str, str]) -> bytes:
    """The cache bytes saved for `key` in `engine_dir`, or b"" (a fresh cache)."""
    path = Path(engine_dir) / key["file"]
    return path.read_bytes() if path.is_file() else b""


def _deserialize(plan: bytes):
    trt = import_tensorrt()
    with _step(trt.__version__, "deserializing the plan"):
        engine = trt.Runtime(_trt_logger(trt)).deserialize_cuda_engine(plan)
    if engine is None:
        raise SpLIPError(f"TensorRT {trt.__version__} could not load the plan: it was built by another TensorRT "
                         "version or for another GPU; re-export the engine on this machine")
    return engine


def inspect_plan(plan: bytes) -> dict:
    """Layer count and whether attention was fused, from the inspector's layer types / tactics."""
    trt = import_tensorrt()
    engine = _deserialize(plan)
    with _step(trt.__version__, "inspecting the plan"):
        # create_engine_inspector() on the engine in both generations; 11 dropped the inspector's
        # `engine` attribute, keeping `execution_context`
        # (https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/_static/python-api/infer/Core/EngineInspector.html)
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return classify_fusion(info)


class PlanRunner:
    """Runs a plan on the GPU, an Embedder: pixels (n, 3, S, S) float32 -> embeddings (n, D)
    float32, with torch CUDA tensors as the I/O buffers. Holds the engine its context needs."""

    def __init__(self, plan: bytes):
        trt = import_tensorrt()
        self.version = trt.__version__
        self.engine = _deserialize(plan)
        with _step(self.version, "creating an execution context"):
            self._check_io(trt)
            self.context = self.engine.create_execution_context()
            self.embedding_dim = int(self.engine.get_tensor_shape(OUTPUT_NAME)[-1])

    def _check_io(self, trt: ModuleType) -> None:
        """The plan's I/O are the tensors this runner binds, in float32 (the fp16 plans keep their
        graph inputs / outputs float32): anything else would be read or written as the wrong type."""
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in (INPUT_NAME, OUTPUT_NAME):
            if name not in names:
                raise SpLIPError(f"TensorRT {self.version}: the plan has no tensor {name!r} (it has {names}); "
                                 "re-export the engine")
            dtype = self.engine.get_tensor_dtype(name)
            if dtype != trt.float32:
                raise SpLIPError(f"TensorRT {self.version}: the plan's {name!r} is {dtype}, not float32; "
                                 "re-export the engine")

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).cuda()  # (n, 3, S, S)
        return self.run(images).cpu().numpy()

    def run(self, images):
        """images (n, 3, S, S) float32 CUDA tensor -> (n, D) float32 CUDA tensor, on the current stream."""
        import torch

        images = images.contiguous().float()
        out = torch.empty(len(images), self.embedding_dim, device=images.device, dtype=torch.float32)  # (n, D)
        stream = torch.cuda.current_stream(images.device)
        with _step(self.version, "running the plan"):
            self.bind(images, out)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise SpLIPError(f"TensorRT {self.version} failed while running the plan "
                                 f"(batch {len(images)}): {_last_errors(_trt_logger(import_tensorrt()))}")
        stream.synchronize()
        return out

    def bind(self, images, out) -> None:
        """Set the input shape (refused when the batch is outside the plan's profile: TensorRT
        returns False and would otherwise run with the previous shape) and the I/O addresses."""
        if not self.context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            low, _, high = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
            raise SpLIPError(f"TensorRT {self.version} refused input shape {tuple(images.shape)}: the plan's "
                             f"profile takes {tuple(low)} to {tuple(high)}")
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
