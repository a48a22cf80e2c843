"""Valid ONNX: every engine graph passes the ONNX checker (full check) and strict shape inference
before export writes it, so strict consumers (TensorRT's parser, other runtimes) accept it."""
from __future__ import annotations

from splip_engine.errors import SpLIPError


def onnx_problem(graph) -> str | None:
    """None when `graph` (an onnx.ModelProto) is valid ONNX, else the first problem in one line.

    Checks `onnx.checker.check_model(full_check=True)` (which includes shape inference) and
    `onnx.shape_inference.infer_shapes(check_type=True, strict_mode=True)`: a value whose declared
    type or shape contradicts what its producer gives fails either.
    """
    import onnx

    try:
        onnx.checker.check_model(graph, full_check=True)
        onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        lines = str(e).strip().splitlines()
        return lines[0] if lines else type(e).__name__
    return None


def check_onnx(graph, what: str) -> None:
    """Raise a SpLIPError naming `what` (e.g. "the fp16 sketch graph") when `graph` is not valid ONNX."""
    problem = onnx_problem(graph)
    if problem:
        raise SpLIPError(f"{what} is not valid ONNX ({problem}); this is an export bug: please report it")
