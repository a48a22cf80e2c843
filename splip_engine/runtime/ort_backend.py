"""ONNX Runtime backend: one InferenceSession per modality graph of the engine dir, on CPU or on
CUDA (the session's providers checked after creation: splip_engine/ort_session.py), with IO
binding for inputs already on the GPU (`embed_tensor`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splip_engine.config import MODALITIES
from splip_engine.errors import SpLIPError
from splip_engine.optional import import_onnxruntime
from splip_engine.ort_session import open_session
from splip_engine.runtime.base import Encoder


class OrtEncoder(Encoder):
    """ONNX Runtime on CPU, or CUDA (CUDAExecutionProvider) when `device="cuda"`. A session that
    fell back to CPU raises when `strict` (the user asked for cuda), else warns and `device`
    becomes "cpu" (auto chose cuda). Idle pool
    threads sleep rather than spin (`spinning=False`): the cores are shared with decoding and the
    HTTP server, and a served request cost 4 ms of CPU instead of 6.5 ms (212 -> 287 req/s on the
    2-core load test) for ~4% more batch-1 latency on an otherwise idle machine."""

    backend = "onnxruntime"

    def __init__(self, engine_dir: Path, manifest: dict[str, Any], device: str = "cpu",
                 batch_size: int = 32, threads: int = 0, spinning: bool = False, strict: bool = True):
        super().__init__(manifest, batch_size=batch_size)
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opened = {modality: self._open(engine_dir, modality, options, device, strict) for modality in MODALITIES}
        self.sessions = {modality: session for modality, (session, _) in opened.items()}
        self.device = "cuda" if all(ran_on == "cuda" for _, ran_on in opened.values()) else "cpu"
        self.input_name = manifest.get("input", {}).get("name", "pixels")
        self.output_name = manifest.get("output", {}).get("name", "embeddings")

    def _open(self, engine_dir: Path, modality: str, options, device: str, strict: bool):
        """The session of `<modality>.onnx`, refused unless the manifest lists it as that modality's
        graph and the graph takes (N, 3, S, S) and gives (N, D) as the manifest says."""
        name = f"{modality}.onnx"
        entry = self.manifest.get("files", {}).get(name)
        if entry is None or entry.get("modality", modality) != modality:
            listed = "not listed" if entry is None else f"listed as the {entry.get('modality')!r} graph"
            raise SpLIPError(f"{engine_dir}/manifest.json has no {modality} graph ({name} is {listed}): "
                             "the manifest does not match the engine files; re-export the engine")
        try:
            session, ran_on = open_session(str(engine_dir / name), device, options, strict, f"{engine_dir / name}")
        except SpLIPError:
            raise
        except Exception as e:  # ONNX Runtime raises its own types for missing / unparsable graphs
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SpLIPError(f"cannot load {engine_dir / name} with ONNX Runtime ({reason}): the file is missing, "
                             "damaged or not an engine graph; re-export the engine") from e
        expected = {"input": [3, self.image_size, self.image_size], "output": [self.embedding_dim]}
        shapes = {"input": session.get_inputs()[0].shape[1:], "output": session.get_outputs()[0].shape[1:]}
        for side, shape in shapes.items():
            static = [d if isinstance(d, int) else None for d in shape]
            if len(static) != len(expected[side]) or any(d not in (None, e) for d, e in zip(static, expected[side])):
                raise SpLIPError(f"{engine_dir / name} has {side} shape (N, {', '.join(map(str, shape))}) but "
                                 f"manifest.json says (N, {', '.join(map(str, expected[side]))}) "
                                 f"(image_size {self.image_size}, "
                                 f"embedding_dim {self.embedding_dim}): the manifest does not match the engine "
                                 "files; re-export the engine")
        return session, ran_on

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        return self.sessions[modality].run(None, {self.input_name: pixels})[0]

    def embed_tensor(self, pixels, modality: str):
        """(N, 3, S, S) torch tensor -> (N, D) float32 on its device. On a CUDA session with CUDA
        input, IO binding hands ONNX Runtime the device memory directly and it writes into a torch
        CUDA tensor: no host round trip. Otherwise the base path (through host memory)."""
        import torch

        self._check_modality(modality)
        if self.device != "cuda" or not pixels.is_cuda:
            return super().embed_tensor(pixels, modality)
        pixels = pixels.detach().float().contiguous()  # (N, 3, S, S) float32
        out = torch.empty((len(pixels), self.embedding_dim), dtype=torch.float32, device=pixels.device)  # (N, D)
        torch.cuda.current_stream(pixels.device).synchronize()  # ONNX Runtime reads on its own stream
        session = self.sessions[modality]
        for start in range(0, len(pixels), self.batch_size):
            batch, result = pixels[start:start + self.batch_size], out[start:start + self.batch_size]
            binding = session.io_binding()
            binding.bind_input(self.input_name, "cuda", pixels.device.index or 0, np.float32, tuple(batch.shape),
                               batch.data_ptr())
            binding.bind_output(self.output_name, "cuda", pixels.device.index or 0, np.float32,
                                tuple(result.shape), result.data_ptr())
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
        return out

    def close(self) -> None:
        self.sessions.clear()
