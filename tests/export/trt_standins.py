"""Stand-ins for the `tensorrt` Python module of two API generations, 10.x and 11.x, written from
NVIDIA's Python API docs (the pages cited in export/tensorrt.py). They RECORD the calls export
makes and refuse the ones a generation does not have; they build nothing and prove nothing about
TensorRT itself: the `tensorrt`-marked tests in test_tensorrt.py do that, on a GPU.

Differences modelled (10.x -> 11.x):
- BuilderFlag.FP16 / BF16 / INT8 / PREFER_PRECISION_CONSTRAINTS / OBEY_PRECISION_CONSTRAINTS:
  present -> removed (AttributeError);
- NetworkDefinitionCreationFlag: EXPLICIT_BATCH = 0, STRONGLY_TYPED = 1 -> STRONGLY_TYPED = 0,
  deprecated and ignored (every network strongly typed);
- engine inspector JSON: "Bindings" (names) -> "I/O Tensors" (objects); "Layers" unchanged.
Both refuse a layer precision on a strongly typed network and, with ignore_mismatch=False, a
timing cache written on another device; a cache of another version is unreadable
(create_timing_cache returns None). A deserialized "PLAN" models running: its I/O tensors (names,
dtypes, the profile's shapes) and an execution context whose set_input_shape returns False
outside the profile, as TensorRT's does; it computes nothing.
"""
from __future__ import annotations

import enum
import json
from types import ModuleType

REMOVED_IN_11 = ("FP16", "BF16", "INT8", "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS")


class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class LayerType(enum.Enum):
    CONVOLUTION = "conv"
    MATRIX_MULTIPLY = "matmul"
    SOFTMAX = "softmax"
    NORMALIZATION = "norm"
    REDUCE = "reduce"


def make_tensorrt(version: str, gpu: str = "NVIDIA H200", fail_at: str | None = None,
                  layers: list | None = None, io_dtypes: tuple[str, str] = ("float32", "float32"),
                  max_batch: int = 8) -> ModuleType:
    """A `tensorrt` stand-in of `version`'s generation running on `gpu`; `fail_at` makes one step
    fail as TensorRT does ("create_network" raises, "parse" / "build" return failure); `layers`
    is what the engine inspector reports; `io_dtypes` the plan's (pixels, embeddings) dtypes,
    `max_batch` its profile's largest batch."""
    major = int(version.split(".")[0])
    trt = ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # (call, detail) in order
    trt.parsed = []  # ONNX bytes handed to the parser
    flags = ["TF32", "REFIT", "SPARSE_WEIGHTS"] + (list(REMOVED_IN_11) if major == 10 else [])
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)
    creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major == 10 else {"STRONGLY_TYPED": 0}
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
    trt.LayerType = LayerType
    trt.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED", "NONE"])
    trt.LayerInformationFormat = enum.Enum("LayerInformationFormat", ["ONELINE", "JSON"])
    trt.float32, trt.float16 = "float32", "float16"
    record = trt.calls.append

    class ILogger:
        Severity = Severity

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger

    class Layer:
        def __init__(self, kind: LayerType, strongly_typed: bool):
            self.type, self._strong, self._precision = kind, strongly_typed, None

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, value) -> None:
            if self._strong:
                raise RuntimeError("Setting layer precision is not allowed in a strongly typed network")
            record(("layer.precision", (self.type.name, value)))
            self._precision = value

    class Network:
        def __init__(self, flags: int):
            strong = major >= 11 or bool(flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            kinds = [LayerType.CONVOLUTION, LayerType.NORMALIZATION, LayerType.MATRIX_MULTIPLY, LayerType.SOFTMAX,
                     LayerType.REDUCE]
            self._layers = [Layer(k, strong) for k in kinds]
            self.num_layers = len(self._layers)

        def get_layer(self, index: int) -> Layer:
            return self._layers[index]

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            trt.parsed.append(data)
            if fail_at == "parse":
                self.num_errors = 1
                return False
            return True

        def get_error(self, index: int) -> str:
            return "In node 3 (Softmax): unsupported data type"

    class TimingCache:
        def __init__(self, blob: bytes):
            self.blob = blob

        def serialize(self) -> bytes:
            header = f"{gpu}|{version}|".encode()
            entries = self.blob.split(b"|", 2)[2] if self.blob else b""
            return header + entries + b"entry;"

    class Profile:
        def set_shape(self, name, low, opt, high) -> None:
            record(("profile.set_shape", (name, low, opt, high)))

    class Config:
        def __init__(self):
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self._cache = None

        def set_flag(self, flag) -> None:
            record(("set_flag", flag.name))

        def clear_flag(self, flag) -> None:
            record(("clear_flag", flag.name))

        def add_optimization_profile(self, profile) -> int:
            return 0

        def create_timing_cache(self, blob: bytes) -> TimingCache | None:
            record(("create_timing_cache", bytes(blob)))
            other_version = blob and blob.split(b"|")[1:2] != [version.encode()]
            return None if other_version else TimingCache(bytes(blob))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            record(("set_timing_cache", ignore_mismatch))
            foreign = cache.blob and not cache.blob.startswith(f"{gpu}|{version}|".encode())
            if foreign and not ignore_mismatch:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self._cache

    class Builder:
        def __init__(self, logger):
            record(("Builder", None))

        def create_network(self, flags: int = 0) -> Network:
            record(("create_network", flags))
            if fail_at == "create_network":
                raise TypeError("create_network(): incompatible function arguments")
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config):
            record(("build_serialized_network", config.profiling_verbosity.name))
            return None if fail_at == "build" else b"PLAN"

    class Inspector:
        def get_engine_information(self, fmt) -> str:
            record(("get_engine_information", fmt.name))
            io = ({"Bindings": ["pixels", "embeddings"]} if major == 10 else
                  {"I/O Tensors": [{"Name": "pixels", "IOMode": "Input"}, {"Name": "embeddings", "IOMode": "Output"}]})
            return json.dumps({"Layers": layers or [], **io})

    class Context:
        def __init__(self):
            self.shape = None

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            record(("set_input_shape", (name, shape)))
            if not 1 <= shape[0] <= max_batch:
                return False  # outside the optimization profile
            self.shape = shape
            return True

        def set_tensor_address(self, name: str, address: int) -> bool:
            record(("set_tensor_address", name))
            return True

    class Engine:
        num_io_tensors = 2
        create_engine_inspector = Inspector

        def get_tensor_name(self, index: int) -> str:
            return ["pixels", "embeddings"][index]

        def get_tensor_dtype(self, name: str) -> str:
            return dict(zip(["pixels", "embeddings"], io_dtypes))[name]

        def get_tensor_shape(self, name: str) -> tuple:
            return (-1, 3, 32, 32) if name == "pixels" else (-1, 64)

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            return [(1, 3, 32, 32), (max_batch, 3, 32, 32), (max_batch, 3, 32, 32)]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan: bytes):
            return Engine() if plan == b"PLAN" else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def calls_named(trt: ModuleType, name: str) -> list:
    """The details of every recorded call `name`, in order."""
    return [detail for call, detail in trt.calls if call == name]
