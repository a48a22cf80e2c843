"""SpLIP with kernels='triton' against the default SDPA path on the tiny model."""
from __future__ import annotations

import pytest
import torch

from splip_engine import SpLIPConfig, build_model
from splip_engine.kernels import KernelUnavailableError

# float32 both ways: the kernel and SDPA differ only by summation order and exp2 vs exp
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    """A model of its own: set_kernels mutates it, so the session's tiny_model stays untouched."""
    return build_model(SpLIPConfig(clip_model="tiny", pretrained="")).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _encode_both_ways(model, fn):
    with torch.no_grad():
        expected = fn(model.set_kernels("torch"))
        try:
            return fn(model.set_kernels("triton")), expected
        finally:
            model.set_kernels("torch")


@pytest.mark.parametrize("modality", ["sketch", "photo"])
def test_triton_kernels_reproduce_the_default_embeddings_and_tokens(model, images, device, modality):
    model.to(device)
    (emb, tokens), (expected_emb, expected_tokens) = _encode_both_ways(
        model, lambda m: m.encode_with_tokens(images.to(device), modality)
    )
    torch.testing.assert_close(emb, expected_emb, atol=ATOL, rtol=0)
    torch.testing.assert_close(tokens, expected_tokens, atol=ATOL, rtol=0)


def test_triton_kernels_reproduce_the_causal_text_embeddings(model, device):
    model.to(device)
    text, expected = _encode_both_ways(model, lambda m: m.class_text_embeddings(["cat", "hot air balloon"]))
    torch.testing.assert_close(text, expected, atol=ATOL, rtol=0)


def test_triton_kernels_on_cpu_without_interpreter_give_a_clear_error(model, images, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model.to("cpu").set_kernels("triton")
    try:
        with torch.no_grad(), pytest.raises(KernelUnavailableError, match="need CUDA tensors.*kernels='torch'"):
            model.encode(images, "sketch")
    finally:
        model.set_kernels("torch")


def test_triton_kernels_with_gradients_on_give_a_clear_error(model, images, device):
    model.to(device).set_kernels("triton")
    try:
        with pytest.raises(KernelUnavailableError, match="inference-only"):
            model.encode(images.to(device), "sketch")
    finally:
        model.set_kernels("torch")


@pytest.mark.slow  # 80 probe images through Triton's CPU interpreter: ~15 s (on CUDA: the GPU suite)
def test_the_torch_engine_with_triton_attention_passes_the_fp32_gate(tiny_engine_dir, tiny_ort_encoder, device):
    from splip_engine.runtime import load_engine
    from splip_engine.runtime.torch_backend import TorchOptions

    encoder = load_engine(tiny_engine_dir, backend="torch", device=device,
                          torch_options=TorchOptions(kernels="triton", cuda_graphs=False))
    assert encoder.model.kernels == "triton"
    assert encoder.parity["sketch"]["passed"] and encoder.parity["sketch"]["thresholds"] == {"max_abs_diff": 1e-4}
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)).numpy()
    torch.testing.assert_close(torch.from_numpy(encoder.embed_pixels(pixels, "photo")),
                               torch.from_numpy(tiny_ort_encoder.embed_pixels(pixels, "photo")), atol=1e-4, rtol=0)
