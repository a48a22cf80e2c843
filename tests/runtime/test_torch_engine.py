"""The torch engine: batch buckets and padding, bf16 / fp16 within their parity gate, the gate's
refusal, the options' checks (CPU), CUDA-graph capture under concurrent first calls and the
compile recompile limit (CPU logic; the capture itself faked), and the CUDA variants (GPU machines only)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from splip_engine import SpLIPError, load_checkpoint
from splip_engine.export import parity
from splip_engine.runtime import load_engine
from splip_engine.runtime.base import Encoder, bucket_for, bucket_sizes
from splip_engine.runtime import torch_backend
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
    with pytest.raises(SpLIPError, match=r"the torch cpu bf16 engine \(bf16 bounds\) failed its parity gate on sketch: "
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


class _FakeCaptureGraphs(torch_backend._GraphPerBucket):
    """FAKE CUDA-graph capture, for CPU: `_capture` (the only CUDA-only step) is replaced by a
    stand-in whose replay() re-runs `encode` on the shared static input into the shared static
    output, slowly, as a replay does on the GPU; everything else (the per-bucket table, the lock,
    copy-in / replay / copy-out) is the engine's own code."""

    captures = 0

    def _capture(self, pixels):
        type(self).captures += 1
        time.sleep(0.05)  # a capture takes a while: concurrent first calls overlap it
        static_in = torch.zeros_like(pixels, dtype=self.dtype)
        static_out = self.encode(static_in)
        encode = self.encode

        class _Replay:
            def replay(self):
                time.sleep(0.01)  # the window in which another caller could overwrite the static buffers
                static_out.copy_(encode(static_in))

        return _Replay(), static_in, static_out


def test_concurrent_first_calls_on_one_bucket_capture_once_and_get_their_own_results(tiny_model):
    model = tiny_model.float().eval()

    def encode(pixels):
        return model.encode(pixels, "sketch")

    graphs = _FakeCaptureGraphs(encode, torch.device("cpu"), torch.float32)
    inputs = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    start, results = threading.Barrier(len(inputs)), {}

    def call(i):
        start.wait()  # every thread's first call on bucket 8 at once, as a warm-up racing a batcher
        with torch.inference_mode():
            results[i] = graphs(inputs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _FakeCaptureGraphs.captures == 1 and list(graphs.graphs) == [(8, 3, 32, 32)]
    with torch.inference_mode():
        for i, pixels in enumerate(inputs):
            torch.testing.assert_close(results[i], encode(pixels), rtol=0, atol=1e-6)  # its own input's embeddings
    assert len({results[i].data_ptr() for i in results}) == len(inputs)  # fresh tensors, not the static buffer


def test_compile_past_the_recompile_limit_is_an_error_not_a_silent_eager_fallback():
    def encode(x):
        return x * 2 + 1

    within = torch_backend.compile_static(encode, "default", shapes=10, backend="eager")
    for n in range(1, 11):  # 10 static shapes > dynamo's default limit of 8: all still compiled
        torch.testing.assert_close(within(torch.ones(n)), torch.full((n,), 3.0))
    over = torch_backend.compile_static(lambda x: x - 1, "default", shapes=2, backend="eager")  # limit stays 8
    for n in range(1, 9):
        over(torch.ones(n))
    with pytest.raises(Exception, match="(?i)recompile"):  # the 9th shape: dynamo's limit, made an error
        over(torch.ones(9))
