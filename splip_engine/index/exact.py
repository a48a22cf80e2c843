"""Exact top-k over a float16 gallery on the CPU by blocked GEMM, for batches of queries.

One small ONNX Runtime graph per call casts a block of gallery rows to float32, multiplies it with
the queries on MLAS (the fastest GEMM on this machine) and keeps the block's top-k; blocks merge
by a stable sort, so ties go to the lower gallery row, as in FAISS. Measured here (1M x 512, 64
queries, top-100): 0.26 s against 0.89 s for FAISS's fp16 scalar-quantizer scan, same results;
below ~8 queries the scan is faster (both are bound by reading the gallery), so GalleryIndex
uses this from MIN_QUERIES up. Optional: without onnxruntime the FAISS scan serves every batch.
"""
from __future__ import annotations

import importlib.util

import numpy as np

MIN_QUERIES = 8
"""Smallest query batch for which the blocked GEMM beats the FAISS scan (measured, see above)."""
BLOCK_ROWS = 65_536
"""Gallery rows per graph call: a 128 MiB float32 block, with the (Q, rows) scores, stays small."""


def available() -> bool:
    """Whether onnxruntime is installed (this path is an optional speed-up)."""
    return importlib.util.find_spec("onnxruntime") is not None


def _topk_graph(dim: int) -> bytes:
    """Serialized ONNX graph: queries (Q, D) float32, block (G, D) float16, k (1,) int64 ->
    top-k scores (Q, k) float32 descending and block rows (Q, k) int64."""
    import onnx.helper as oh
    from onnx import TensorProto

    nodes = [oh.make_node("Cast", ["block"], ["block32"], to=TensorProto.FLOAT),
             oh.make_node("Gemm", ["queries", "block32"], ["scores"], transB=1),  # (Q, G)
             oh.make_node("TopK", ["scores", "k"], ["top_scores", "top_rows"], axis=1, largest=1, sorted=1)]
    inputs = [oh.make_tensor_value_info("queries", TensorProto.FLOAT, ["Q", dim]),
              oh.make_tensor_value_info("block", TensorProto.FLOAT16, ["G", dim]),
              oh.make_tensor_value_info("k", TensorProto.INT64, [1])]
    outputs = [oh.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["Q", "K"]),
               oh.make_tensor_value_info("top_rows", TensorProto.INT64, ["Q", "K"])]
    graph = oh.make_graph(nodes, "blocked_topk", inputs, outputs)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


class BlockedExactSearch:
    """Exact inner-product top-k of float32 queries against `gallery` (N, D) float16 (kept by
    reference, not copied). Thread-safe: ONNX Runtime sessions may run concurrently."""

    def __init__(self, gallery: np.ndarray, threads: int = 0):
        from splip_engine.optional import import_onnxruntime

        ort = import_onnxruntime()
        if gallery.dtype != np.float16 or gallery.ndim != 2:
            raise ValueError(f"gallery must be (N, D) float16, got {gallery.shape} {gallery.dtype}")
        self.gallery = gallery
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # cores are shared
        self._session = ort.InferenceSession(_topk_graph(gallery.shape[1]), options,
                                             providers=["CPUExecutionProvider"])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries (Q, D) float32 -> scores (Q, min(k, N)) float32 descending, rows (Q, min(k, N)) int64."""
        n = len(self.gallery)
        k = min(k, n)
        if k == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        block_scores, block_rows = [], []
        for start in range(0, n, BLOCK_ROWS):
            block = self.gallery[start:start + BLOCK_ROWS]
            feeds = {"queries": queries, "block": block, "k": np.array([min(k, len(block))], dtype=np.int64)}
            scores, rows = self._session.run(None, feeds)
            block_scores.append(scores)
            block_rows.append(rows + start)
        scores, rows = np.concatenate(block_scores, axis=1), np.concatenate(block_rows, axis=1)  # (Q, blocks * k)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # blocks are in row order: ties keep it
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

