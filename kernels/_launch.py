"""Launch plumbing shared by the kernels: when a Triton kernel may run, dot precision, lazy jitting.

Triton picks compiled vs interpreted execution when a function is decorated, from the
TRITON_INTERPRET variable. Our kernels are decorated with `lazy_jit` instead, which jits them at
their first launch in the mode the variable selects *then*, so it may be set at any time before
(tests set it in a conftest, after other modules may already have imported triton).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import torch

from splip_engine.errors import SpLIPError

MIN_TRITON = (3, 4)
"""tl.topk (similarity) and triton.knobs (interpreter switch) arrived in Triton 3.4."""

try:
    import triton
except ImportError as e:  # torch wheels for CUDA on Linux ship it; other builds may not
    raise SpLIPError(
        "splip_engine.kernels needs Triton: pip install triton (or use kernels='torch')"
    ) from e


def triton_too_old(version: str) -> str | None:
    """None when Triton `version` has what the kernels use, else the reason and the fix."""
    parts = [int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit()]
    if len(parts) == 2 and tuple(parts) >= MIN_TRITON:
        return None
    return (f"Triton {version} is too old for splip_engine.kernels (needs >= {'.'.join(map(str, MIN_TRITON))} for "
            "tl.topk and triton.knobs): pip install 'triton>=3.4', or use kernels='torch'")


if triton_too_old(triton.__version__):
    raise SpLIPError(triton_too_old(triton.__version__))


class KernelUnavailableError(SpLIPError):
    """A Triton kernel was asked to run where it cannot: CPU tensors without TRITON_INTERPRET=1,
    bfloat16 under the interpreter (numpy has no bfloat16), or inputs that need gradients."""


def interpreting() -> bool:
    """True when TRITON_INTERPRET=1 is set now: kernels run in Triton's (slow) CPU interpreter."""
    return bool(triton.knobs.runtime.interpret)


def check_launchable(op: str, tensors: Sequence[torch.Tensor]) -> None:
    """Raise a clear error unless `op` can run its Triton kernel on `tensors`; never falls back."""
    devices = sorted({str(t.device) for t in tensors})
    if len(devices) != 1:
        raise SpLIPError(f"{op}: inputs are on different devices {devices}; move them to one device")
    if interpreting():
        if any(t.dtype == torch.bfloat16 for t in tensors):
            raise KernelUnavailableError(
                f"{op}: bfloat16 under TRITON_INTERPRET=1 is not supported (Triton's interpreter "
                "computes bfloat16 wrongly); use float16 or float32, or run on CUDA"
            )
    elif tensors[0].device.type != "cuda":
        raise KernelUnavailableError(
            f"{op} got {devices[0]} tensors: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 "
            "to run Triton's slow CPU interpreter, for tests); on CPU use kernels='torch'"
        )
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise KernelUnavailableError(
            f"{op} is inference-only (no backward): call it under torch.no_grad() or "
            "torch.inference_mode(), or use kernels='torch' to train"
        )


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for `dtype`: float32 follows torch's matmul setting (IEEE unless
    torch.set_float32_matmul_precision allows TF32), so the kernel matches eager float32."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"  # Triton's default; only float32 operands read it


def on_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make `tensor`'s GPU the current one while launching: Triton launches on the current device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


class lazy_jit:
    """`fn` as a Triton kernel (`kernel[grid](...)`), jitted per execution mode at first launch."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._jitted: dict[bool, triton.runtime.KernelInterface] = {}  # interpreting? -> kernel

    def __getitem__(self, grid: tuple[int, ...]) -> Callable:
        interpret = interpreting()
        if interpret not in self._jitted:
            self._jitted[interpret] = triton.jit(self.fn)
        launch = self._jitted[interpret][grid]
        return functools.partial(_interpret, launch) if interpret else launch


def _interpret(launch: Callable, *args, **kwargs) -> None:
    with _interpreter_patches():
        launch(*args, **kwargs)


@contextlib.contextmanager
def _interpreter_patches() -> Iterator[None]:
    """Two fixes to Triton's interpreter, scoped to one launch. (1) Triton's own @jit helpers
    (tl.max, tl.topk, ...) were built for compilation when triton was imported before
    TRITON_INTERPRET=1 was set, and calling them from an interpreted kernel raises: run them
    interpreted. (2) xor reductions (inside tl.sort / tl.topk / tl.flip) fall back to a Python
    loop per element: do them with numpy (exact, so results are unchanged, only faster)."""
    from triton.runtime.interpreter import InterpretedFunction, ReduceOps
    from triton.runtime.jit import JITFunction

    call, reduce = JITFunction.__call__, ReduceOps.apply_impl
    if not isinstance(triton.language.max, InterpretedFunction):
        JITFunction.__call__ = lambda self, *args, **kwargs: _interpreted(self.fn)(*args, **kwargs)
    ReduceOps.apply_impl = _numpy_xor_reduce(reduce)
    try:
        yield
    finally:
        JITFunction.__call__, ReduceOps.apply_impl = call, reduce


@functools.cache
def _interpreted(fn: Callable) -> Callable:
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(fn)


def _numpy_xor_reduce(apply_impl: Callable) -> Callable:
    import numpy as np

    def apply(self, inputs):
        if self.combine_fn is not triton.language.standard._xor_combine:
            return apply_impl(self, inputs)
        (data,) = inputs
        xor = np.bitwise_xor.reduce(data.handle.data, axis=self.axis, keepdims=self.keep_dims)
        return self.to_tensor(xor, data.dtype)

    return apply
