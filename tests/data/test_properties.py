"""Property: whatever bytes or array comes in, load_image + preprocess give a (3, S, S) float32
array or an ImageDecodeError, never another exception or a warning."""
from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splip_engine.data.images import ImageDecodeError
from splip_engine.data.transforms import PreprocessSpec, preprocess

from .imagefactory import encode, noise_image

SPEC = PreprocessSpec(image_size=8)
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(source, modality: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a PIL warning leaking out would fail here
        try:
            out = preprocess(source, modality, SPEC)
        except ImageDecodeError:
            return
    assert out.shape == (3, 8, 8) and out.dtype == np.float32 and np.isfinite(out).all()


@st.composite
def damaged_images(draw) -> bytes:
    """A real encoded image, then truncated and/or with a few bytes overwritten."""
    image = noise_image(draw(st.integers(1, 12)), draw(st.integers(1, 12)), seed=draw(st.integers(0, 9)))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1"]))
    fmt = draw(st.sampled_from(FORMATS))
    if fmt in ("JPEG", "PPM") and mode in ("RGBA", "P"):
        mode = "RGB"
    data = bytearray(encode(image.convert(mode), fmt))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@SETTINGS
@given(data=st.binary(max_size=512), modality=st.sampled_from(["sketch", "photo"]))
def test_random_bytes(data, modality):
    check(data, modality)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # some decode ~1 s
@given(data=damaged_images(), modality=st.sampled_from(["sketch", "photo"]))
def test_damaged_real_images(data, modality):
    check(data, modality)


@SETTINGS
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.float32, np.int16, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    ),
    modality=st.sampled_from(["sketch", "photo"]),
)
def test_random_arrays(array, modality):
    check(array, modality)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 12), height=st.integers(1, 12), seed=st.integers(0, 9),
       mode=st.sampled_from(["RGB", "L", "RGBA", "P", "1"]), fmt=st.sampled_from(FORMATS),
       modality=st.sampled_from(["sketch", "photo"]))
def test_intact_real_images_are_never_refused(width, height, seed, mode, fmt, modality):
    """The other properties hold for a preprocess that refuses everything; this one does not."""
    if fmt in ("JPEG", "PPM") and mode in ("RGBA", "P"):
        mode = "RGB"
    out = preprocess(encode(noise_image(width, height, seed=seed).convert(mode), fmt), modality, SPEC)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32 and np.isfinite(out).all()
