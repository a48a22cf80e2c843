"""Properties that extend tests/data/test_properties.py (one image through `preprocess`: a
result or ImageDecodeError) to what the entry points actually call: a whole batch through
`preprocess_batch` (the embed job and `Encoder.embed`) gives every input exactly one outcome, in
order; a PIL image of any mode (with any transparency) is a result or our error; and
`Encoder.embed` on random bytes gives unit vectors or ImageDecodeError, nothing else."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from data.imagefactory import encode, noise_image
from data.test_properties import SPEC, check, damaged_images
from splip_engine.data.images import ImageDecodeError
from splip_engine.data.transforms import preprocess, preprocess_batch

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODALITY = st.sampled_from(["sketch", "photo"])
PIL_MODES = Image.MODES  # every mode this Pillow can make


@st.composite
def good_images(draw) -> bytes:
    image = noise_image(draw(st.integers(1, 10)), draw(st.integers(1, 10)), seed=draw(st.integers(0, 99)))
    return encode(image, draw(st.sampled_from(["PNG", "JPEG", "BMP"])))


SOURCES = st.one_of(
    st.binary(max_size=256),
    damaged_images(),
    good_images(),
    hnp.arrays(dtype=st.sampled_from([np.uint8, np.float32]), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)),
)


@PROPERTY
@given(sources=st.lists(SOURCES, max_size=6), modality=MODALITY)
def test_a_batch_gives_every_input_exactly_one_outcome_in_input_order(sources, modality):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, errors = preprocess_batch(sources, modality, SPEC)
    failed = [i for i, _ in errors]
    assert failed == sorted(set(failed)) and all(0 <= i < len(sources) for i in failed)
    good = [i for i in range(len(sources)) if i not in set(failed)]
    assert pixels.shape == (len(good), 3, SPEC.image_size, SPEC.image_size) and pixels.dtype == np.float32
    for row, i in zip(pixels, good):  # each good row is that input's own pixels, in order
        np.testing.assert_array_equal(row, preprocess(sources[i], modality, SPEC))
    for i, message in errors:  # each failure is that input's own specific error
        with pytest.raises(ImageDecodeError, match=re.escape(message)):
            preprocess(sources[i], modality, SPEC)


@PROPERTY
@given(kinds=st.lists(st.booleans(), min_size=1, max_size=6), data=st.data(), modality=MODALITY)
def test_a_batch_decodes_every_good_image_beside_bad_ones(kinds, data, modality):
    """The batch properties above hold for a decoder that refuses everything; this one does not."""
    drawn = [(good, data.draw(good_images() if good else st.binary(max_size=64))) for good in kinds]
    pixels, errors = preprocess_batch([source for _, source in drawn], modality, SPEC)
    failed = {i for i, _ in errors}
    assert not failed & {i for i, (good, _) in enumerate(drawn) if good}, errors
    assert len(pixels) == len(drawn) - len(failed)


@PROPERTY
@given(mode=st.sampled_from(PIL_MODES), width=st.integers(0, 6), height=st.integers(0, 6), data=st.data(),
       modality=MODALITY)
def test_a_pil_image_of_any_mode_and_transparency_is_a_result_or_our_error(mode, width, height, data, modality):
    size = len(Image.new(mode, (width, height)).tobytes())
    image = Image.frombytes(mode, (width, height), data.draw(st.binary(min_size=size, max_size=size)))
    transparency = data.draw(st.one_of(st.none(), st.integers(0, 300), st.tuples(*[st.integers(0, 255)] * 3)))
    if transparency is not None:
        image.info["transparency"] = transparency
    check(image, modality)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sources=st.lists(st.one_of(st.binary(max_size=128), damaged_images(), good_images()), min_size=1, max_size=4),
       modality=MODALITY)
def test_encoder_embed_gives_unit_vectors_or_our_error(tiny_ort_encoder, sources, modality):
    try:
        vectors = tiny_ort_encoder.embed(sources, modality)
    except ImageDecodeError as e:
        position = int(re.match(r"image (\d+): ", str(e)).group(1))  # names the first bad input
        assert 0 <= position < len(sources)
        with pytest.raises(ImageDecodeError):
            preprocess(sources[position], modality, tiny_ort_encoder.spec)
        return
    assert vectors.shape == (len(sources), tiny_ort_encoder.embedding_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
