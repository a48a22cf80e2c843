"""Kernel tests run on CUDA when there is one, else on CPU in Triton's interpreter.

TRITON_INTERPRET is read by our kernels at each launch (kernels/_launch.py: `lazy_jit`), so it is
set per test here and never leaks into the rest of the session, whatever imported triton first.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _interpret_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
