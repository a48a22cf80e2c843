"""PyTorch backend: the SpLIP model itself (from the engine dir's checkpoint/ or a checkpoint dir),
eager on CPU, and on CUDA the engine for machines with only torch + Triton installed.

On CUDA (`TorchOptions`): fp16 / bf16 weights, `torch.compile`, CUDA graphs replayed per static
batch bucket (a batch is padded to the smallest bucket holding it; each bucket's graph captured
at its first call under the engine's lock, in thread-local capture mode, so a server's warm-up
and its batcher threads never race a capture or each other's static buffers), the Triton fused attention
(`kernels="triton"`), and host <-> device copies through pinned buffers on a copy stream,
overlapped with the previous batch's compute. Any variant other than eager fp32 is gated at
load like every exported engine: the probe batch through the variant vs the fp32 eager model
(export.parity, the precision's bounds), refused with the report when it fails.
"""
from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder, bucket_for

logger = logging.getLogger(__name__)

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024)
"""Static batch sizes captured as CUDA graphs / compiled shapes (up to the encoder's batch size)."""
KERNELS = ("torch", "triton")


@dataclass(frozen=True)
class TorchOptions:
    """How the torch engine runs. `precision` None: the manifest's on CUDA (fp16 engines run in
    fp16; int8 is a CPU ONNX engine and runs fp32 here), fp32 on CPU. `cuda_graphs` None: on
    for CUDA. `compile`: torch.compile (inductor; with CUDA graphs its "reduce-overhead" mode).
    `kernels="triton"`: the fused attention of splip_engine.kernels."""

    precision: str | None = None
    compile: bool = False
    cuda_graphs: bool | None = None
    batch_buckets: tuple[int, ...] = DEFAULT_BUCKETS
    kernels: str = "torch"
    parity_gate: bool = True

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISION_DTYPES:
            raise SpLIPError(f"TorchOptions.precision={self.precision!r}: choose one of {sorted(PRECISION_DTYPES)}")
        if self.kernels not in KERNELS:
            raise SpLIPError(f"TorchOptions.kernels={self.kernels!r}: choose one of {KERNELS}")
        if not self.batch_buckets or min(self.batch_buckets) < 1:
            raise SpLIPError(f"TorchOptions.batch_buckets={self.batch_buckets!r}: need batch sizes >= 1")


def resolve_precision(requested: str | None, manifest: dict[str, Any], device: str) -> str:
    """The precision the torch engine computes in (see TorchOptions.precision)."""
    if requested is not None:
        return requested
    return "fp16" if device == "cuda" and manifest.get("precision") == "fp16" else "fp32"


class TorchEncoder(Encoder):
    """The SpLIP model as an Encoder (see the module docstring); `parity` holds the load-time
    gate's report per modality (empty for eager fp32, which is the reference itself)."""

    backend = "torch"

    def __init__(self, model, manifest: dict[str, Any], device: str = "cpu", batch_size: int = 32,
                 options: TorchOptions | None = None):
        options = options or TorchOptions()
        on_cuda = torch.device(device).type == "cuda"
        graphs = on_cuda if options.cuda_graphs is None else options.cuda_graphs
        if graphs and not on_cuda:
            raise SpLIPError("CUDA graphs need device='cuda'; on CPU use TorchOptions(cuda_graphs=False)")
        static = graphs or options.compile
        super().__init__(manifest, batch_size=batch_size, batch_buckets=options.batch_buckets if static else None)
        theirs = {"embedding_dim": int(model.embed_dim), "image_size": int(model.image_size)}
        ours = {"embedding_dim": self.embedding_dim, "image_size": self.image_size}
        if theirs != ours:
            diff = ", ".join(f"{k} {ours[k]} (manifest) != {theirs[k]} (model)" for k in ours if ours[k] != theirs[k])
            raise SpLIPError(f"the manifest does not match the model it describes: {diff}; re-export the engine")
        self.device = torch.device(device).type
        self._device = _indexed(torch.device(device))
        self.torch_device = self._device  # with its index ("cuda:1"): where decode and copies go
        self.options = options
        self.precision = resolve_precision(options.precision, manifest, self.device)
        self.dtype = PRECISION_DTYPES[self.precision]
        self.cuda_graphs = graphs
        variant = self.precision != "fp32" or static or options.kernels != "torch"
        reference = copy.deepcopy(model).float().cpu().eval() if variant and options.parity_gate else None
        self.model = model.to(device=self._device, dtype=self.dtype).eval().set_kernels(options.kernels)
        self._forward = {m: self._make_forward(m) for m in MODALITIES}
        self._pinned: dict[tuple, torch.Tensor] = {}
        self.parity: dict[str, dict] = {}
        if reference is not None:
            self._gate(reference)

    # ------------------------------------------------------------ the model call
    def _make_forward(self, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """pixels (B, 3, S, S) in self.dtype on the device -> (B, D) float32 embeddings (a fresh
        tensor: graph replays reuse their output buffer, so it is copied out)."""
        model = self.model

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return model.encode(pixels, modality)

        if self.options.compile:
            mode = "reduce-overhead" if self.cuda_graphs else "default"  # reduce-overhead: CUDA graphs per shape
            shapes = len(MODALITIES) * len(self.batch_buckets or DEFAULT_BUCKETS)
            compiled = compile_static(encode, mode, shapes)
            return lambda pixels: compiled(pixels).float().clone()
        if self.cuda_graphs:
            return _GraphPerBucket(encode, self._device, self.dtype)
        return lambda pixels: encode(pixels).float()

    def forward_device(self, pixels: torch.Tensor, modality: str) -> torch.Tensor:
        """One batch already on the device, (B, 3, S, S) any float dtype, B a bucket when the
        engine is static -> (B, D) float32 on the device. The timing entry point of benchmarks."""
        with torch.inference_mode():
            return self._forward[modality](pixels.to(self.dtype))

    def embed_tensor(self, pixels: torch.Tensor, modality: str) -> torch.Tensor:
        """(N, 3, S, S) on this engine's device -> (N, D) float32 there, in padded bucket batches."""
        self._check_modality(modality)
        if pixels.device != self._device:
            return super().embed_tensor(pixels, modality)
        outputs = []
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start:start + self.batch_size]
            rows = bucket_for(len(batch), self.batch_buckets) if self.batch_buckets else len(batch)
            padded = torch.cat([batch, batch.new_zeros((rows - len(batch), *batch.shape[1:]))]) if rows > len(batch) \
                else batch
            outputs.append(self.forward_device(padded, modality)[:len(batch)])
        return torch.cat(outputs) if outputs else pixels.new_empty((0, self.embedding_dim), dtype=torch.float32)

    # ------------------------------------------------------------ host batches
    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        batch = torch.from_numpy(pixels).to(self._device)
        return self.forward_device(batch, modality).cpu().numpy()

    def _run_batches(self, batches: list[np.ndarray], modality: str) -> Iterator[np.ndarray]:
        """On CUDA: each batch staged in a pinned buffer, copied on a copy stream while the
        previous batch computes, its embeddings copied back into a pinned buffer; two of each
        buffer alternate. On CPU: the base loop."""
        if self._device.type != "cuda":
            yield from super()._run_batches(batches, modality)
            return
        compute = torch.cuda.current_stream(self._device)
        copier = torch.cuda.Stream(self._device)
        copied = [torch.cuda.Event(), torch.cuda.Event()]  # H2D from input slot i done
        finished = [torch.cuda.Event(), torch.cuda.Event()]  # D2H into output slot i done
        pending: tuple[torch.Tensor, torch.cuda.Event] | None = None
        for index, batch in enumerate(batches):
            slot = index % 2
            host_in = self._pinned_buffer(("in", slot, batch.shape), torch.float32)
            copied[slot].synchronize()  # the copy that last read this slot is done
            host_in.numpy()[...] = batch
            with torch.cuda.stream(copier):
                device_in = host_in.to(self._device, non_blocking=True)
                copied[slot].record(copier)
            compute.wait_stream(copier)
            device_in.record_stream(compute)
            with torch.inference_mode():
                embeddings = self._forward[modality](device_in.to(self.dtype))  # (B, D) float32
            host_out = self._pinned_buffer(("out", slot, embeddings.shape), torch.float32)
            host_out.copy_(embeddings, non_blocking=True)
            finished[slot].record(compute)
            if pending is not None:
                pending[1].synchronize()
                yield pending[0].numpy().copy()
            pending = (host_out, finished[slot])
        if pending is not None:
            pending[1].synchronize()
            yield pending[0].numpy().copy()

    def _pinned_buffer(self, key: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A page-locked host tensor per (role, slot, shape), allocated once."""
        if key not in self._pinned:
            self._pinned[key] = torch.empty(tuple(key[2]), dtype=dtype, pin_memory=True)
        return self._pinned[key]

    # ------------------------------------------------------------ the gate
    def _gate(self, reference_model) -> None:
        """Probe batch through this engine vs the fp32 eager model on CPU, per modality, with the
        precision's parity bounds (fp32 variants: fp32's); refuses a failing variant."""
        from splip_engine.export import parity

        self.parity = parity.gate_engine(self.embed_pixels, reference_model, self.image_size,
                                         parity.resolve_thresholds(self.precision),
                                         f"torch {self.describe()} engine ({self.precision} bounds)",
                                         "use another precision or kernels='torch'")
        logger.info("torch %s engine: parity %s", self.describe(), self.parity)

    def describe(self) -> str:
        """e.g. "cuda fp16 compiled cuda-graphs triton"."""
        parts = [self.device, self.precision, "compiled" if self.options.compile else "",
                 "cuda-graphs" if self.cuda_graphs else "", "triton" if self.options.kernels == "triton" else ""]
        return " ".join(p for p in parts if p)


def _indexed(device: torch.device) -> torch.device:
    """`cuda` -> `cuda:<current device>`, so that device comparisons and copies keep the index."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def compile_static(encode: Callable[[torch.Tensor], torch.Tensor], mode: str, shapes: int,
                   backend: str = "inductor") -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile of `encode` for `shapes` static input shapes (towers x buckets). Both towers'
    closures share one code object, and dynamo stops compiling a code object after its recompile
    limit (8 by default) and then runs it eagerly with only a log warning: each call runs with the
    limit raised to `shapes` and a hit made an error, never a silent fall-back to eager."""
    import torch._dynamo

    compiled = torch.compile(encode, mode=mode, dynamic=False, backend=backend)
    limits = {"recompile_limit": max(shapes, torch._dynamo.config.recompile_limit),
              "fail_on_recompile_limit_hit": True}

    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch._dynamo.config.patch(limits):
            return compiled(pixels)

    return run


class _GraphPerBucket:
    """`encode` captured as one CUDA graph per input shape at its first call (warm-up on a side
    stream first: Triton JIT, cuBLAS handles, allocator), replayed on a static input buffer.
    One lock covers capture, copy-in, replay and copy-out: the static buffers are shared by every
    caller, and a capture must not see another thread's kernels (captured in thread-local mode,
    so other threads' CUDA calls elsewhere do not invalidate it). Returns a fresh float32 tensor."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], device: torch.device, dtype: torch.dtype):
        self.encode, self.device, self.dtype = encode, device, dtype
        self.graphs: dict[tuple, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        key = tuple(pixels.shape)
        with self._lock:
            if key not in self.graphs:
                self.graphs[key] = self._capture(pixels)
            graph, static_in, static_out = self.graphs[key]
            static_in.copy_(pixels)
            graph.replay()
            return static_out.to(torch.float32, copy=True)

    def _capture(self, pixels: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        static_in = torch.zeros_like(pixels, dtype=self.dtype, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.encode(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.encode(static_in)
        return graph, static_in, static_out


def model_manifest(model) -> dict[str, Any]:
    """The runtime part of a manifest for a bare SpLIP model (a checkpoint dir with no export)."""
    from splip_engine.data.transforms import PREPROCESS_MODES, PreprocessSpec

    spec = PreprocessSpec.for_model(model)
    return {
        "format_version": 1,
        "model_config": model.cfg.to_dict(),
        "image_size": spec.image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "preprocess": dict(PREPROCESS_MODES),
        "embedding_dim": model.embed_dim,
        "precision": "fp32",
        "engine_hash": None,
    }
