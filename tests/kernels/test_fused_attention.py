"""fused_attention against the float32 eager reference: shapes, dtypes, causal, layout, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poison import poisoned_empty

from splip_engine.errors import SpLIPError
from splip_engine.kernels import (
    ATTENTION_ATOL as ATOL,
    KernelUnavailableError,
    attention_inputs as _qkv,
    attention_reference,
    fused_attention,
)

ON_CUDA = torch.cuda.is_available()
BF16 = pytest.param(
    torch.bfloat16,
    marks=[pytest.mark.gpu,
           pytest.mark.skipif(not ON_CUDA, reason="bfloat16 needs a CUDA GPU (Triton's interpreter has no bfloat16)")],
)


def _check(q, k, v, causal: bool) -> None:
    with poisoned_empty():  # an unwritten output element stays NaN and fails the comparison
        out = fused_attention(q, k, v, causal=causal)
    expected = attention_reference(q, k, v, causal=causal)
    assert out.shape == expected.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.float(), expected.float(), atol=ATOL[q.dtype], rtol=0)


# N: the text tower (7), ViT-B/32 with prompts (56), one tile + a bit (77), three tiles (130)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("seq", "head_dim"), [(7, 32), (56, 64), (77, 64), (130, 32)])
def test_matches_reference(seq, head_dim, causal, dtype, device):
    _check(*_qkv(2, 2, seq, head_dim, dtype, device), causal)


@pytest.mark.parametrize("head_dim", [8, 48])
def test_head_dims_padded_to_the_tile_match_reference(head_dim, device):
    _check(*_qkv(1, 3, 21, head_dim, torch.float32, device), causal=True)


def test_contiguous_inputs_and_batch_heads_grid_match_reference(device):
    q, k, v = (t.contiguous() for t in _qkv(3, 5, 33, 32, torch.float16, device))
    _check(q, k, v, causal=False)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_1024_tiles_with_online_softmax(causal, device):
    _check(*_qkv(1, 1, 1024, 64, torch.float16, device), causal)


def test_matches_torch_sdpa_up_to_float32_rounding(device):
    q, k, v = _qkv(2, 3, 40, 32, torch.float32, device)
    for causal in (False, True):
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.testing.assert_close(fused_attention(q, k, v, causal), expected, atol=ATOL[torch.float32], rtol=0)


def test_output_is_a_heads_view_so_merging_heads_is_free(device):
    q, k, v = _qkv(2, 4, 9, 16, torch.float32, device)
    out = fused_attention(q, k, v)  # (B, H, N, Dh)
    assert out.shape == (2, 4, 9, 16)
    assert out.transpose(1, 2).is_contiguous()  # (B, N, H, Dh) memory


def test_cpu_tensors_without_interpreter_raise_instead_of_falling_back(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = _qkv(1, 1, 4, 16, torch.float32, "cpu")
    with pytest.raises(KernelUnavailableError, match="need CUDA tensors .*TRITON_INTERPRET=1"):
        fused_attention(q, k, v)


@pytest.mark.skipif(ON_CUDA, reason="checks the CPU interpreter's refusal")
def test_interpreter_refuses_bfloat16():
    q, k, v = _qkv(1, 1, 4, 16, torch.bfloat16, "cpu")
    with pytest.raises(KernelUnavailableError, match="bfloat16 under TRITON_INTERPRET=1"):
        fused_attention(q, k, v)


def test_inputs_needing_gradients_are_refused(device):
    q, k, v = (t.clone().requires_grad_() for t in _qkv(1, 1, 4, 16, torch.float32, device))
    with pytest.raises(KernelUnavailableError, match="inference-only"):
        fused_attention(q, k, v)
    with torch.no_grad():
        fused_attention(q, k, v)


@pytest.mark.parametrize(
    ("shapes", "dtypes", "match"),
    [
        ([(1, 2, 5, 16), (1, 2, 6, 16), (1, 2, 5, 16)], [torch.float32] * 3, "share one"),
        ([(2, 5, 16)] * 3, [torch.float32] * 3, "share one"),
        ([(1, 1, 5, 16)] * 3, [torch.float32, torch.float16, torch.float32], "dtypes"),
        ([(1, 1, 5, 16)] * 3, [torch.float64] * 3, "dtypes"),
        ([(1, 1, 5, 512)] * 3, [torch.float32] * 3, "head dim 512"),
    ],
)
def test_bad_inputs_are_named(shapes, dtypes, match):
    tensors = [torch.zeros(s, dtype=d) for s, d in zip(shapes, dtypes)]
    with pytest.raises(SpLIPError, match=match):
        fused_attention(*tensors)


def test_inputs_on_different_devices_are_refused():
    with pytest.raises(SpLIPError, match="different devices"):
        fused_attention(torch.zeros(1, 1, 4, 16), torch.zeros(1, 1, 4, 16, device="meta"), torch.zeros(1, 1, 4, 16))


def test_under_torch_compile_it_is_one_opaque_op_with_the_same_result(device):
    """torch.compile must not trace into the launch: it calls splip_kernels::fused_attention."""
    q, k, v = _qkv(2, 2, 9, 16, torch.float32, device, seed=5)
    compiled = torch.compile(lambda q, k, v: fused_attention(q, k, v, True) * 2, dynamic=False)
    with torch.no_grad():
        got = compiled(q, k, v)
    expected = 2 * attention_reference(q, k, v, causal=True)
    torch.testing.assert_close(got, expected, atol=2 * ATOL[torch.float32], rtol=0)
    graph = torch._dynamo.explain(lambda q, k, v: fused_attention(q, k, v, True))(q, k, v)
    assert graph.graph_break_count == 0 and graph.graph_count == 1


def test_triton_older_than_3_4_is_refused_with_the_fix():
    from splip_engine.kernels._launch import triton_too_old

    assert triton_too_old("3.4.0") is None and triton_too_old("3.8.0+git1234") is None
    assert triton_too_old("3.3.1").startswith("Triton 3.3.1 is too old for splip_engine.kernels (needs >= 3.4")
    assert "pip install 'triton>=3.4'" in triton_too_old("2.3.0")
