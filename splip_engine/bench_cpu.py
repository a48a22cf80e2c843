"""The CPU engines of `splip-engine bench --cpu`: every engine a CPU user could run, built from
one model in a scratch dir. Ours come from `export` (fp32, and int8 calibrated on synthetic
sketches and photos) and `load_engine` (ONNX Runtime int8 static, OpenVINO f32 / bf16 / int8, and
`auto`'s own pick); the peers are what a user would do instead: our ONNX in OpenVINO with no
settings, and NNCF int8 built as OpenVINO's docs show (`nncf.quantize` with defaults)."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from splip_engine.errors import SpLIPError
from splip_engine.runtime.base import Encoder
from splip_engine.runtime.cpu_features import read_cpu_features

if TYPE_CHECKING:
    from splip_engine.export.parity import Embedder

logger = logging.getLogger(__name__)

CPU_ENGINES = ("torch_fp32", "ort_fp32", "ort_int8", "ort_int8_static", "openvino_user_default", "openvino_f32",
               "openvino_bf16", "openvino_int8", "nncf_int8_as_docs", "auto")
"""The `bench --cpu` rows, in table order (openvino_bf16 only where the CPU computes bf16)."""
ENGINE_DIR_ENGINES = frozenset(CPU_ENGINES[3:])
"""The rows that need exported engine dirs (the others are built from the model in memory)."""
CALIBRATION_CLASSES, CALIBRATION_PER_CLASS = 8, 20
"""Synthetic calibration set: 160 images per tower, 128 calibrate and 32 are held out for the gate."""
DOCS_CALIBRATION = 32
"""Calibration images of the docs' NNCF peer (as the issue's measurement: 32 images)."""


def cpu_engine_names(engines: tuple[str, ...]) -> tuple[str, ...]:
    """`engines` less the bf16 row where this CPU has no bf16 (OpenVINO would refuse it)."""
    return tuple(e for e in engines if e != "openvino_bf16" or read_cpu_features().bf16)


class BenchEngineDirs:
    """The engine dirs behind the CPU rows, exported once per bench run into `workdir`."""

    def __init__(self, model, workdir: Path):
        from splip_engine.data.mini import make_mini_dataset
        from splip_engine.export import export_engines

        self.workdir = Path(workdir)
        self.image_size = model.image_size
        self.calibration = self.workdir / "calibration"
        make_mini_dataset(self.calibration, classes=CALIBRATION_CLASSES, per_class=CALIBRATION_PER_CLASS,
                          size=model.image_size)
        self.fp32 = self.workdir / "fp32"
        self.int8_static = self.workdir / "int8-static"
        self.auto: Encoder | None = None
        self.auto_pick: str | None = None
        logger.info("bench cpu: exporting the fp32 and calibrated int8 engines into %s", self.workdir)
        for out, extra in ((self.fp32, {}), (self.int8_static, {"int8": True, "calibration": self.calibration})):
            report = export_engines(model, out, **extra)
            if report.errors:
                raise SpLIPError(f"bench engine export into {out} failed: {'; '.join(report.errors)}")

    def embedder(self, name: str, modality: str) -> Embedder:
        """The embedder of one ENGINE_DIR_ENGINES row for `modality`'s tower."""
        from splip_engine.export.calibration import openvino_embedder
        from splip_engine.runtime import load_engine

        if name == "openvino_user_default":  # compiled with no settings, as a user would
            return openvino_embedder(str(self.fp32 / f"{modality}.onnx"), None)
        if name == "nncf_int8_as_docs":
            return openvino_embedder(self._nncf_as_docs(modality), None)
        if name == "auto":
            with _deciding_afresh(self.workdir / "auto-cache"):
                encoder = self.auto = load_engine(self.fp32, device="cpu")
            self.auto_pick = f"{encoder.backend} {getattr(encoder, 'precision', 'fp32')}"
        elif name == "ort_int8_static":
            encoder = load_engine(self.int8_static, backend="onnxruntime", device="cpu")
        else:  # openvino_<precision>
            precision = name.split("_", 1)[1]
            encoder = load_engine(self.int8_static if precision == "int8" else self.fp32, backend="openvino",
                                  device="cpu", precision=precision)
        return lambda pixels: encoder.embed_pixels(pixels, modality)

    def _nncf_as_docs(self, modality: str):
        """NNCF int8 as OpenVINO's post-training quantization docs show: read the model,
        `nncf.quantize(model, nncf.Dataset(...))` with every default, on DOCS_CALIBRATION images."""
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        from splip_engine.data.transforms import PreprocessSpec
        from splip_engine.export.calibration import calibration_sources, read_calibration
        from splip_engine.optional import import_nncf, import_openvino

        nncf, ov = import_nncf(), import_openvino()
        spec = PreprocessSpec(image_size=self.image_size, mean=tuple(OPENAI_DATASET_MEAN),
                              std=tuple(OPENAI_DATASET_STD))
        pixels = read_calibration(calibration_sources(self.calibration), spec, count=DOCS_CALIBRATION).pixels[modality]
        dataset = nncf.Dataset([pixels[i:i + 1] for i in range(len(pixels))])
        return nncf.quantize(ov.Core().read_model(str(self.fp32 / f"{modality}.onnx")), dataset)


@contextlib.contextmanager
def _deciding_afresh(cache: Path) -> Iterator[None]:
    """`auto` times the variants on this run's CPU: an empty decision cache and no override
    (the caller's environment is restored after)."""
    from splip_engine.runtime.cpu_auto import CACHE_ENV, OVERRIDE_ENV

    saved = {name: os.environ.get(name) for name in (CACHE_ENV, OVERRIDE_ENV)}
    os.environ[CACHE_ENV] = str(cache)
    os.environ.pop(OVERRIDE_ENV, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
