"""The one preprocessing: geometry per modality, normalisation, batch error reporting, training aug."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from splip_engine.data.transforms import (
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
    PREPROCESS_MODES,
    PreprocessSpec,
    eval_transform,
    preprocess,
    preprocess_batch,
    train_transform,
)
from splip_engine.errors import SpLIPError

from .imagefactory import encode, noise_image

MEAN = np.asarray(OPENAI_DATASET_MEAN, np.float32)[:, None, None]  # (3, 1, 1)
STD = np.asarray(OPENAI_DATASET_STD, np.float32)[:, None, None]
WHITE = (np.float32(1) - MEAN) / STD  # (3, 1, 1): a white pixel after normalisation
BLACK = (np.float32(0) - MEAN) / STD


def test_modes_are_the_documented_ones():
    assert PREPROCESS_MODES == {"sketch": "pad_square_white", "photo": "resize_center_crop"}


def test_default_spec_uses_openai_clip_statistics():
    import open_clip.constants

    spec = PreprocessSpec()
    assert spec.mean == open_clip.constants.OPENAI_DATASET_MEAN
    assert spec.std == open_clip.constants.OPENAI_DATASET_STD


@pytest.mark.parametrize("modality", ["sketch", "photo"])
@pytest.mark.parametrize("size", [(50, 20), (20, 50), (33, 33)])
def test_output_shape_and_dtype(modality, size):
    out = preprocess(noise_image(*size), modality, PreprocessSpec(image_size=16))
    assert out.shape == (3, 16, 16) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]


def test_white_sketch_padded_stays_white_after_normalisation():
    sketch = Image.new("RGB", (20, 60), "white")
    out = preprocess(sketch, "sketch", PreprocessSpec(image_size=32))
    np.testing.assert_array_equal(out, np.broadcast_to(WHITE, out.shape))


def test_sketch_is_centred_on_a_white_square():
    # 10 wide x 30 tall black: pad to 30x30 with 10 white columns each side; size 30 = no resize
    out = preprocess(Image.new("RGB", (10, 30), "black"), "sketch", PreprocessSpec(image_size=30))
    np.testing.assert_array_equal(out[:, :, :10], np.broadcast_to(WHITE, (3, 30, 10)))
    np.testing.assert_array_equal(out[:, :, 10:20], np.broadcast_to(BLACK, (3, 30, 10)))
    np.testing.assert_array_equal(out[:, :, 20:], np.broadcast_to(WHITE, (3, 30, 10)))


def test_photo_matches_open_clip_eval_transform_exactly():
    import open_clip

    image = noise_image(57, 40, seed=3)
    reference = open_clip.image_transform(24, is_train=False)(image).numpy()
    out = preprocess(image, "photo", PreprocessSpec(image_size=24))
    np.testing.assert_array_equal(out, reference)  # same PIL resize, same float32 ops in the same order


def test_photo_crop_is_the_centre():
    image = Image.new("RGB", (30, 10), "black")
    image.paste((255, 255, 255), (10, 0, 20, 10))  # white middle third
    out = preprocess(image, "photo", PreprocessSpec(image_size=10))
    np.testing.assert_array_equal(out, np.broadcast_to(WHITE, out.shape))


def test_preprocess_accepts_any_load_image_source(tmp_path):
    image = noise_image(12, 9)
    file = tmp_path / "x.png"
    file.write_bytes(encode(image, "PNG"))
    spec = PreprocessSpec(image_size=8)
    expected = preprocess(image, "photo", spec)
    for source in (file, str(file), file.read_bytes(), np.asarray(image)):
        np.testing.assert_array_equal(preprocess(source, "photo", spec), expected)


def test_unknown_modality_is_refused():
    with pytest.raises(SpLIPError, match="unknown modality 'drawing'; use one of \\['sketch', 'photo'\\]"):
        preprocess(noise_image(4, 4), "drawing", PreprocessSpec(image_size=4))


def test_batch_skips_and_lists_bad_inputs_in_order(tmp_path):
    good = [noise_image(10, 14, seed=i) for i in range(3)]
    sources = [good[0], b"not an image", good[1], tmp_path / "missing.png", good[2]]
    spec = PreprocessSpec(image_size=8)
    images, errors = preprocess_batch(sources, "sketch", spec)
    assert images.shape == (3, 3, 8, 8) and images.dtype == np.float32
    for row, image in zip(images, good, strict=True):
        np.testing.assert_array_equal(row, preprocess(image, "sketch", spec))
    assert [index for index, _ in errors] == [1, 3]
    assert "a text file" in errors[0][1] and "not found" in errors[1][1]


def test_empty_batch():
    images, errors = preprocess_batch([], "photo", PreprocessSpec(image_size=8))
    assert images.shape == (0, 3, 8, 8) and errors == []


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 0}, "image_size=0: must be an int >= 1"),
    ({"image_size": 2.5}, "image_size=2.5"),
    ({"mean": (0.5, 0.5)}, "mean=.*needs 3 values"),
    ({"std": (1.0, 0.0, 1.0)}, "std=.*must be > 0"),
])
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessSpec(**kwargs)


def test_spec_round_trips_through_its_manifest_form():
    spec = PreprocessSpec(image_size=48, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    d = spec.to_dict()
    assert d["modes"] == PREPROCESS_MODES
    assert PreprocessSpec.from_dict(d) == spec and isinstance(spec.mean, tuple)


def test_spec_from_a_manifest_with_unknown_modes_is_refused():
    d = {**PreprocessSpec().to_dict(), "modes": {"sketch": "letterbox_black", "photo": "resize_center_crop"}}
    with pytest.raises(SpLIPError, match="preprocessing modes .*letterbox_black.* not supported"):
        PreprocessSpec.from_dict(d)


def test_spec_for_model_reads_the_model_image_size():
    from splip_engine import SpLIPConfig, build_model

    model = build_model(SpLIPConfig(clip_model="tiny", pretrained=""))
    assert PreprocessSpec.for_model(model) == PreprocessSpec(image_size=32)


def test_eval_transform_is_preprocess_as_a_tensor():
    image = noise_image(20, 13)
    spec = PreprocessSpec(image_size=12)
    out = eval_transform("sketch", spec)(image)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), preprocess(image, "sketch", spec))


def test_train_transform_is_random_seeded_by_torch_and_shaped_like_eval():
    image = noise_image(30, 20)
    spec = PreprocessSpec(image_size=16)
    transform = train_transform("photo", spec)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    again = transform(image)
    outputs = [transform(image) for _ in range(4)]
    assert first.shape == (3, 16, 16) and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert any(not torch.equal(first, other) for other in outputs)


def test_train_transform_flips_horizontally_sometimes():
    # left half black, right half white: a flip puts the white on the left
    image = Image.new("RGB", (16, 16), "black")
    image.paste((255, 255, 255), (8, 0, 16, 16))
    transform = train_transform("sketch", PreprocessSpec(image_size=16))
    torch.manual_seed(1)
    left_means = [float(transform(image)[0, :, :4].mean()) for _ in range(20)]
    assert min(left_means) < float(BLACK[0, 0, 0]) + 0.5 and max(left_means) > float(WHITE[0, 0, 0]) - 0.5


def test_train_transform_keeps_a_white_sketch_white():
    transform = train_transform("sketch", PreprocessSpec(image_size=16))
    out = transform(Image.new("RGB", (10, 30), "white")).numpy()
    np.testing.assert_allclose(out, np.broadcast_to(WHITE, out.shape), atol=1e-6)  # bicubic of a constant


def _jpeg(width: int, height: int) -> bytes:
    return encode(noise_image(width, height, seed=5), "JPEG", quality=90)


@pytest.mark.parametrize("size, draft, decoded", [
    ((256, 256), (32, 32), (32, 32)),    # 1/8: the largest DCT scale libjpeg has
    ((130, 70), (32, 32), (65, 35)),     # 1/2: the shorter side must stay >= 32
    ((60, 200), (32, 32), (60, 200)),    # 60 // 32 = 1: no reduction
])
def test_a_large_jpeg_is_decoded_at_the_dct_scale_that_still_covers_the_size(size, draft, decoded):
    from splip_engine.data.images import load_image

    data = _jpeg(*size)
    assert load_image(data, draft_size=draft).size == decoded
    assert load_image(data).size == size  # without draft_size: full decode
    png = encode(noise_image(*size), "PNG")
    assert load_image(png, draft_size=draft).size == size  # only JPEGs have a DCT domain


def test_preprocess_decodes_jpegs_with_the_draft_unless_the_spec_says_not():
    import dataclasses

    from splip_engine.data.images import load_image
    from splip_engine.data.transforms import _resize_center_crop, preprocess_uint8

    data, spec = _jpeg(320, 240), PreprocessSpec(image_size=32)
    drafted = np.asarray(_resize_center_crop(load_image(data, draft_size=(32, 32)), 32))
    full = np.asarray(_resize_center_crop(load_image(data), 32))
    assert not np.array_equal(drafted, full)  # the two decodings differ, so the checks below can fail
    np.testing.assert_array_equal(preprocess_uint8(data, "photo", spec), drafted)
    np.testing.assert_array_equal(preprocess_uint8(data, "photo", dataclasses.replace(spec, jpeg_draft=False)), full)
    assert spec.to_dict()["jpeg_draft"] is True
    old_manifest = {k: v for k, v in spec.to_dict().items() if k != "jpeg_draft"}
    assert PreprocessSpec.from_dict(old_manifest).jpeg_draft is True


def test_training_and_evaluation_transforms_decode_paths_like_preprocess(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(300, 200))
    spec = PreprocessSpec(image_size=32)
    np.testing.assert_array_equal(eval_transform("photo", spec)(path).numpy(), preprocess(path, "photo", spec))
    np.testing.assert_array_equal(eval_transform("photo", spec)(str(path)).numpy(),
                                  preprocess(path.read_bytes(), "photo", spec))


def test_a_batch_is_normalised_exactly_as_single_images():
    from splip_engine.data.transforms import normalise_batch, preprocess_uint8

    spec = PreprocessSpec(image_size=12)
    images = [noise_image(20, 14, seed=i) for i in range(5)]
    batch = normalise_batch(np.stack([preprocess_uint8(image, "photo", spec) for image in images]), spec)
    assert batch.shape == (5, 3, 12, 12) and batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    for row, image in zip(batch, images, strict=True):
        np.testing.assert_array_equal(row, preprocess(image, "photo", spec))
