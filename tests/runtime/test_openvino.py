"""The OpenVINO CPU backend and `backend="auto"` on CPU: parity gates at load (f32 / bf16 vs
torch fp32; int8 in tests/export/test_calibration.py), bf16 only where the CPU has it (an
AVX2-only CPU is faked through the /proc/cpuinfo the features are read from), auto's choice, its
cache keyed by CPU, and the package without openvino installed."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from splip_engine.errors import SpLIPError
from splip_engine.runtime import cpu_auto, cpu_features, openvino_backend
from splip_engine.runtime import load_engine

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B12 (faked)\nflags\t\t: fpu sse2 avx avx2 fma\n"
PIXELS = np.random.default_rng(2).standard_normal((5, 3, 32, 32), dtype=np.float32)


@pytest.fixture
def avx2_cpu(tmp_path, monkeypatch):
    """The CPU features read from a /proc/cpuinfo of an AVX2-only CPU."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AVX2_ONLY)
    monkeypatch.setattr(cpu_features, "CPUINFO", cpuinfo)
    return cpuinfo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_auto.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_auto.OVERRIDE_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def torch_reference(tiny_engine_dir):
    return {m: load_engine(tiny_engine_dir, backend="torch", device="cpu").embed_pixels(PIXELS, m)
            for m in ("sketch", "photo")}


def test_openvino_f32_passes_its_gate_and_matches_torch(tiny_engine_dir, torch_reference):
    with load_engine(tiny_engine_dir, backend="openvino", device="cpu", precision="f32") as engine:
        assert (engine.backend, engine.precision) == ("openvino", "f32")
        assert all(report["passed"] and report["n_probe"] == 40 for report in engine.parity.values())
        for modality, reference in torch_reference.items():
            # f32 kernels of another library: float32 rounding only (the export gate's bound)
            np.testing.assert_allclose(engine.embed_pixels(PIXELS, modality), reference, atol=1e-4)


def test_openvino_bf16_where_the_cpu_has_it(tiny_engine_dir, torch_reference):
    if not cpu_features.read_cpu_features().bf16:
        pytest.skip("this CPU has neither AVX512_BF16 nor AMX-BF16")
    with load_engine(tiny_engine_dir, backend="openvino", device="cpu") as engine:
        assert engine.precision == "bf16"  # openvino's default precision here
        assert engine.parity["sketch"]["thresholds"] == {"min_cosine": 0.999, "top10_agreement": 0.95}
        embeddings = engine.embed_pixels(PIXELS, "sketch")
    cosine = np.sum(embeddings * torch_reference["sketch"], axis=1)  # (5,) unit rows
    assert cosine.min() >= 0.999 and np.abs(embeddings - torch_reference["sketch"]).max() > 1e-6  # bf16 really ran


def test_a_failing_gate_refuses_the_engine_with_its_numbers(tiny_engine_dir, monkeypatch):
    monkeypatch.setattr(openvino_backend, "F32_BOUNDS", {"max_abs_diff": 1e-12})
    with pytest.raises(SpLIPError, match=r"OpenVINO f32 engine of .* failed its parity gate on sketch: "
                                         r"max_abs_diff [0-9.e-]+ > 1e-12"):
        load_engine(tiny_engine_dir, backend="openvino", device="cpu", precision="f32")


def test_batch_1_runs_on_a_static_shape_and_other_sizes_on_the_dynamic_model(tiny_engine_dir):
    class Spy:  # an infer request that records the batch sizes it ran
        def __init__(self, request):
            self.request, self.rows = request, []

        def infer(self, inputs, **kwargs):
            self.rows.append(len(inputs[0]))
            return self.request.infer(inputs, **kwargs)

        def get_output_tensor(self, index):
            return self.request.get_output_tensor(index)

    with load_engine(tiny_engine_dir, backend="openvino", device="cpu", precision="f32", batch_size=4) as engine:
        compiled = engine.requests["sketch"]
        assert sorted(compiled, key=str) == [1, None] and tuple(compiled[1].get_input_tensor(0).shape) == (1, 3, 32, 32)
        spies = {rows: Spy(request) for rows, request in compiled.items()}
        engine.requests["sketch"] = spies
        for rows in (1, 4, 3, 9):  # 9: chunks of 4, 4 and 1
            engine.embed_pixels(np.zeros((rows, 3, 32, 32), dtype=np.float32), "sketch")
        assert {rows: spy.rows for rows, spy in spies.items()} == {1: [1, 1], None: [4, 3, 4, 4]}


def test_the_gate_checks_every_compiled_shape(tiny_engine_dir, monkeypatch):
    """A static batch-1 model that goes wrong is refused, although the probe batch alone (40 rows,
    in chunks of 32 and 8) would never run it."""
    infer = openvino_backend._infer

    def wrong_for_one_row(request, pixels):
        out = infer(request, pixels)
        return out[:, ::-1].copy() if len(pixels) == 1 else out

    monkeypatch.setattr(openvino_backend, "_infer", wrong_for_one_row)
    with pytest.raises(SpLIPError,
                       match=r"OpenVINO f32 engine of .* \(static batch 1\) failed its parity gate on sketch"):
        load_engine(tiny_engine_dir, backend="openvino", device="cpu", precision="f32")


def test_an_avx2_only_cpu_never_gets_bf16(tiny_engine_dir, avx2_cpu, cache):
    features = cpu_features.read_cpu_features()
    assert features.model == "AMD EPYC 7B12 (faked)" and not features.bf16 and features.names() == ["AVX2"]
    with pytest.raises(SpLIPError, match=r"precision='bf16' needs a CPU with AVX512_BF16 or AMX-BF16"):
        load_engine(tiny_engine_dir, backend="openvino", device="cpu", precision="bf16")
    assert load_engine(tiny_engine_dir, backend="openvino", device="cpu").precision == "f32"
    engine = load_engine(tiny_engine_dir, device="cpu")
    decision = json.loads(next(cache.glob("cpu-auto-*.json")).read_text())
    (key, choice), = decision.items()
    assert key.startswith("AMD EPYC 7B12 (faked) [avx2] |")
    assert set(choice["timings"]) == {"onnxruntime fp32", "openvino f32"}  # bf16 was not even a candidate
    assert getattr(engine, "precision", "fp32") != "bf16"


def test_auto_times_the_variants_picks_the_fastest_and_caches_it_per_cpu(tiny_engine_dir, cache, avx2_cpu,
                                                                        monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="splip_engine.runtime.loader"):
        first = load_engine(tiny_engine_dir, device="cpu")
    line, = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend=auto on cpu")]
    (path,) = cache.glob("cpu-auto-*.json")
    (key, decision), = json.loads(path.read_text()).items()
    scores = {name: np.exp(np.mean(np.log(list(t.values())))) for name, t in decision["timings"].items()}
    assert f"{decision['backend']} {decision['precision']}" == min(scores, key=scores.get)
    assert first.backend == decision["backend"]
    assert "ms per image at batch 1/16" in line and f"decided now, cached in {path}" in line

    def no_timing(*args):
        raise AssertionError("a cached decision must not be timed again")

    monkeypatch.setattr(cpu_auto, "decide", no_timing)
    assert load_engine(tiny_engine_dir, device="cpu").backend == decision["backend"]
    monkeypatch.setattr(cpu_features, "CPUINFO", cpu_features.Path("/proc/cpuinfo"))  # another CPU key
    if cpu_features.read_cpu_features().key == key.split(" |")[0]:
        pytest.skip("this machine is the faked CPU")
    with pytest.raises(AssertionError, match="must not be timed again"):
        load_engine(tiny_engine_dir, device="cpu")  # re-decides for the new key


def test_the_override_wins_and_a_wrong_one_is_named(tiny_engine_dir, cache, monkeypatch):
    monkeypatch.setenv(cpu_auto.OVERRIDE_ENV, "openvino:f32")
    engine = load_engine(tiny_engine_dir, device="cpu")
    assert (engine.backend, engine.precision) == ("openvino", "f32") and not list(cache.glob("*"))
    monkeypatch.setenv(cpu_auto.OVERRIDE_ENV, "openvino:int8")
    with pytest.raises(SpLIPError, match=r"names no engine variant .* choose one of onnxruntime:fp32, openvino:f32"):
        load_engine(tiny_engine_dir, device="cpu")


def test_openvino_is_cpu_only_and_needs_a_calibrated_dir_for_int8(tiny_engine_dir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU is "visible": the backend refuses it
    with pytest.raises(SpLIPError, match=r"^backend='openvino' runs on the CPU: use device='cpu'$"):
        load_engine(tiny_engine_dir, backend="openvino", device="cuda")
    with pytest.raises(SpLIPError, match=r"has no OpenVINO int8 graphs: export it with .*--calibration"):
        load_engine(tiny_engine_dir, backend="openvino", device="cpu", precision="int8")


def test_without_openvino_the_package_imports_helps_and_names_the_extra(tiny_engine_dir):
    code = f"""
import sys
sys.modules["openvino"] = None
sys.modules["nncf"] = None
from click.testing import CliRunner
from splip_engine.cli import main
for command in (["--help"], ["export", "--help"], ["embed", "--help"], ["info"]):
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, (command, result.output)
from splip_engine.runtime import load_engine
from splip_engine.errors import SpLIPError
assert load_engine({str(tiny_engine_dir)!r}, device="cpu").backend == "onnxruntime"
try:
    load_engine({str(tiny_engine_dir)!r}, backend="openvino", device="cpu")
except SpLIPError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "openvino is not installed: pip install 'splip-engine[cpu]'" in done.stdout
