"""`poisoned_empty`, the kernel checks' test helper (tests here and benchmarks/gpu_suite.py, which
loads this file by path): kept out of the package because it patches torch.empty process-wide."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def poisoned_empty() -> Iterator[None]:
    """Inside this block torch.empty returns NaN-filled float and max-filled integer tensors, so a
    kernel that leaves part of its output unwritten fails its check instead of passing on stale
    memory (a previous run's identical result, say). Process-wide while it lasts: use it only
    in a test or the GPU suite, never around code other threads run."""
    empty = torch.empty

    def poisoned(*args, **kwargs) -> torch.Tensor:
        tensor = empty(*args, **kwargs)
        if tensor.is_floating_point():
            return tensor.fill_(float("nan"))
        return tensor.fill_(torch.iinfo(tensor.dtype).max) if tensor.dtype != torch.bool else tensor

    torch.empty = poisoned
    try:
        yield
    finally:
        torch.empty = empty
