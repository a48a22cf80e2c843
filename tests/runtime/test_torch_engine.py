"""The torch engine: batch buckets and padding, bf16 / fp16 within their parity gate, the gate's
refusal, the options' checks (CPU), and the CUDA variants (GPU machines only)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from splip_engine import SpLIPError, load_checkpoint
from splip_engine.export import parity
from splip_engine.runtime import load_engine
from splip_engine.runtime.base import Encoder, bucket_for, bucket_sizes
from splip_engine.runtime.torch_backend import DEFAULT_BUCKETS, TorchEncoder, TorchOptions, model_manifest

ON_CUDA = torch.cuda.is_available()


def test_bucket_sizes_cap_at_the_batch_size_and_always_hold_it():
    assert bucket_sizes(64, DEFAULT_BUCKETS) == (1, 8, 32, 64)
    assert bucket_sizes(100, (1, 8)) == (1, 8, 100)
    assert bucket_sizes(1024, DEFAULT_BUCKETS) == DEFAULT_BUCKETS
    assert [bucket_for(n, (1, 8, 32)) for n in (1, 2, 8, 9, 32)] == [1, 8, 8, 32, 32]
    with pytest.raises(SpLIPError, match="batch sizes must be >= 1"):
        bucket_sizes(0, (1,))


class _RowEncoder(Encoder):
    """Embeds row i as a one-hot of its first pixel's value, recording the batch shapes it got."""

    def __init__(self, manifest, batch_size, buckets):
        super().__init__(manifest, batch_size=batch_size, batch_buckets=buckets)
        self.shapes: list[int] = []

    def _embed_impl(self, pixels: np.ndarray, modality: str) -> np.ndarray:
        self.shapes.append(len(pixels))
        out = np.zeros((len(pixels), self.embedding_dim), np.float32)
        out[np.arange(len(pixels)), pixels[:, 0, 0, 0].astype(int)] = 1.0
        return out


def test_batches_are_padded_to_their_bucket_and_the_padding_dropped(tiny_model):
    encoder = _RowEncoder(model_manifest(tiny_model), batch_size=16, buckets=(1, 8))
    pixels = np.zeros((41, 3, 32, 32), np.float32)
    pixels[:, 0, 0, 0] = np.arange(41) % 64  # row i -> embedding one-hot at i
    out = encoder.embed_pixels(pixels, "sketch")
    assert encoder.shapes == [16, 16, 16]  # 16 + 16 + 9 -> padded to the 16 bucket
    np.testing.assert_array_equal(out.argmax(1), np.arange(41) % 64)
    encoder.shapes.clear()
    encoder.embed_pixels(pixels[:5], "sketch")
    assert encoder.shapes == [8]
    assert _RowEncoder(model_manifest(tiny_model), 16, None).embed_pixels(pixels[:5], "photo").shape == (5, 64)


@pytest.mark.parametrize("precision", ["bf16"])
def test_reduced_precision_on_cpu_passes_its_gate_and_stays_near_fp32(tiny_checkpoint, tiny_engine_dir, precision):
    encoder = load_engine(tiny_engine_dir, backend="torch", device="cpu",
                          torch_options=TorchOptions(precision=precision))
    assert encoder.precision == precision and next(encoder.model.parameters()).dtype == {
        "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    bounds = parity.DEFAULT_THRESHOLDS[precision]
    for modality in ("sketch", "photo"):
        report = encoder.parity[modality]
        assert report["passed"] and report["thresholds"] == bounds and report["n_probe"] == parity.PROBE_SIZE
    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = load_checkpoint(tiny_checkpoint).eval().encode(pixels, "sketch")
    got = torch.from_numpy(encoder.embed_pixels(pixels.numpy(), "sketch"))
    # 8 / 11 significant bits: far from fp32's 1e-4 bound, well within the gate's cosine 0.999
    assert torch.nn.functional.cosine_similarity(got, reference).min() >= bounds["min_cosine"]
    assert not torch.equal(got, reference)


def test_a_variant_outside_its_bounds_is_refused_at_load(tiny_engine_dir, monkeypatch):
    monkeypatch.setitem(parity.DEFAULT_THRESHOLDS, "bf16", {"max_abs_diff": 1e-6})
    with pytest.raises(SpLIPError, match=r"the torch cpu bf16 engine failed its bf16 parity gate on sketch: "
                                         r"max_abs_diff .* > 1e-06"):
        load_engine(tiny_engine_dir, backend="torch", device="cpu", torch_options=TorchOptions(precision="bf16"))


def test_eager_fp32_is_the_reference_and_skips_the_gate(tiny_engine_dir):
    encoder = load_engine(tiny_engine_dir, backend="torch", device="cpu")
    assert (encoder.precision, encoder.parity, encoder.batch_buckets) == ("fp32", {}, None)


def test_options_are_checked(tiny_model):
    with pytest.raises(SpLIPError, match=r"TorchOptions.precision='int4'"):
        TorchOptions(precision="int4")
    with pytest.raises(SpLIPError, match=r"TorchOptions.kernels='cuda'"):
        TorchOptions(kernels="cuda")
    with pytest.raises(SpLIPError, match=r"CUDA graphs need device='cuda'"):
        TorchEncoder(tiny_model, model_manifest(tiny_model), device="cpu", options=TorchOptions(cuda_graphs=True))


@pytest.mark.slow  # inductor compiles the tiny towers for two bucket shapes: ~1 min on 2 cores
def test_compiled_engine_on_cpu_passes_the_fp32_gate_with_static_buckets(tiny_engine_dir, tiny_ort_encoder):
    encoder = load_engine(tiny_engine_dir, backend="torch", device="cpu", batch_size=8,
                          torch_options=TorchOptions(compile=True, batch_buckets=(1, 8)))
    assert encoder.batch_buckets == (1, 8) and encoder.parity["photo"]["passed"]
    pixels = np.random.default_rng(1).standard_normal((11, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(encoder.embed_pixels(pixels, "photo"), tiny_ort_encoder.embed_pixels(pixels, "photo"),
                               atol=1e-4)  # the fp32 gate's bound


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA GPU (none is visible)")
@pytest.mark.parametrize("options", [
    TorchOptions(precision="fp16"),
    TorchOptions(precision="bf16"),
    TorchOptions(precision="fp16", kernels="triton"),
    TorchOptions(precision="fp16", compile=True),
], ids=["fp16-graphs", "bf16-graphs", "fp16-graphs-triton", "fp16-compiled-graphs"])
def test_cuda_variants_pass_their_gate_and_agree_on_device_and_host(tiny_engine_dir, options):
    encoder = load_engine(tiny_engine_dir, backend="torch", device="cuda", batch_size=64, torch_options=options)
    assert encoder.device == "cuda" and encoder.cuda_graphs
    assert all(report["passed"] for report in encoder.parity.values())
    pixels = torch.randn(70, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    host = encoder.embed_pixels(pixels.numpy(), "sketch")  # pinned, pipelined copies
    device = encoder.embed_tensor(pixels.cuda(), "sketch")  # stays on the GPU
    assert device.is_cuda and device.shape == (70, 64)
    np.testing.assert_allclose(device.cpu().numpy(), host, atol=1e-6)  # same graphs, same inputs


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA GPU (none is visible)")
def test_the_fp16_engine_dir_runs_fp16_on_cuda_by_default(tiny_model, cached_tracing, tmp_path):
    from splip_engine.export import export_engines

    assert export_engines(tiny_model, tmp_path / "fp16", fp16=True)
    encoder = load_engine(tmp_path / "fp16", backend="torch", device="cuda")
    assert encoder.precision == "fp16" and encoder.cuda_graphs and encoder.parity["sketch"]["passed"]
