"""load_image: every kind of good and bad input of ENGINE.md gives the right image or a specific error."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from splip_engine.data import images
from splip_engine.data.images import ImageDecodeError, load_image
from splip_engine.errors import SpLIPError

from .imagefactory import encode, noise_image, png_with_size


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


# ---------------------------------------------------------------- good sources
@pytest.mark.parametrize("kind", ["path", "str", "bytes", "bytearray", "pil", "array"])
def test_every_source_kind_gives_the_same_rgb_pixels(tmp_path, kind):
    reference = noise_image(7, 5)
    data = encode(reference, "PNG")
    file = tmp_path / "a.png"
    file.write_bytes(data)
    source = {"path": file, "str": str(file), "bytes": data, "bytearray": bytearray(data),
              "pil": reference, "array": pixels(reference)}[kind]
    image = load_image(source)
    assert image.mode == "RGB" and image.size == (7, 5)
    np.testing.assert_array_equal(pixels(image), pixels(reference))


def test_grayscale_array_becomes_rgb_with_equal_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = pixels(load_image(gray))
    assert out.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_rgba_array_transparency_becomes_white():
    rgba = np.zeros((2, 2, 4), np.uint8)  # black, fully transparent
    rgba[0, 0, 3] = 255  # one opaque black pixel
    out = pixels(load_image(rgba))
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_rgba_png_is_composited_onto_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (200, 0, 0, 128))  # half-transparent red
    out = pixels(load_image(encode(rgba, "PNG")))
    assert out[0, 0].tolist() == [255, 255, 255]
    # alpha compositing: 200*a + 255*(1-a), a = 128/255
    np.testing.assert_allclose(out[0, 1], [227, 127, 127], atol=1)


def test_la_image_transparency_becomes_white():
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (30, 255))
    out = pixels(load_image(encode(la, "PNG")))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [30, 30, 30]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index_becomes_white(fmt):
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    out = pixels(load_image(encode(palette, fmt, transparency=0)))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 100, 50]


def test_rgb_png_with_a_transparent_colour_becomes_white_there():
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((1, 0), (1, 2, 3))
    out = pixels(load_image(encode(rgb, "PNG", transparency=(10, 20, 30))))
    assert out[0].tolist() == [[255, 255, 255], [1, 2, 3]]


def test_palette_without_transparency_keeps_its_colours():
    palette = Image.new("P", (1, 1), 0)
    palette.putpalette([10, 20, 30] + [0] * 765)
    assert pixels(load_image(encode(palette, "PNG")))[0, 0].tolist() == [10, 20, 30]


def test_cmyk_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # full magenta + yellow = red
    assert pixels(load_image(encode(cmyk, "TIFF")))[0, 0].tolist() == [255, 0, 0]
    assert load_image(encode(cmyk, "JPEG")).mode == "RGB"


def test_cmyk_jpeg_keeps_its_colour():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    np.testing.assert_allclose(pixels(load_image(encode(cmyk, "JPEG", quality=95)))[4, 4], [255, 0, 0], atol=8)


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    levels = np.array([[0, 257, 32896, 65535]], np.uint16)
    image16 = Image.fromarray(levels)
    assert image16.mode == "I;16"
    out = pixels(load_image(encode(image16, "PNG")))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_thirty_two_bit_integer_image_is_clipped_to_sixteen_bits_then_scaled():
    image32 = Image.fromarray(np.array([[-5, 65535, 100000]], np.int32))
    assert image32.mode == "I"
    assert pixels(load_image(image32))[0, :, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize("mode, value, expected", [("L", 77, 77), ("1", 1, 255), ("1", 0, 0)])
def test_grayscale_and_bilevel_become_rgb(mode, value, expected):
    out = pixels(load_image(encode(Image.new(mode, (3, 3), value), "PNG")))
    assert out.shape == (3, 3, 3) and (out == expected).all()


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = pixels(load_image(data))
    assert out[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied():
    # a 40x20 photo, left half red, right half blue, stored with orientation 6 (display rotated
    # 90 degrees clockwise): upright it is 20x40 with red on top
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert upright.size == (20, 40)
    top, bottom = pixels(upright)[5, 10], pixels(upright)[35, 10]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_is_applied_to_pil_input_too():
    stored = Image.new("RGB", (4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    opened = Image.open(io.BytesIO(encode(stored, "JPEG", exif=exif.tobytes())))
    assert load_image(opened).size == (2, 4)


# ---------------------------------------------------------------- bad sources
def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="image file not found: .*nope.png"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="is a directory, not an image file"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.jpg is empty \(0 bytes\)"):
        load_image(empty)


def test_empty_bytes():
    with pytest.raises(ImageDecodeError, match=r"<bytes> is empty \(0 bytes\)"):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    data = encode(noise_image(64, 64), fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\..*: truncated image data"):
        load_image(cut)


def test_corrupt_png_data():
    data = bytearray(encode(noise_image(16, 16), "PNG"))
    idat = data.index(b"IDAT") + 8
    data[idat:idat + 40] = bytes(40)  # zeroed compressed stream, CRC now wrong
    with pytest.raises(ImageDecodeError, match="corrupt image data"):
        load_image(bytes(data))


def test_corrupt_header_of_a_known_format():
    data = bytearray(encode(noise_image(8, 8), "PNG"))
    data[12:16] = b"XXXX"  # the IHDR chunk name
    with pytest.raises(ImageDecodeError, match="PNG data with a corrupt header"):
        load_image(bytes(data))


def test_text_file_is_not_an_image(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg: a text file, not an image"):
        load_image(text)


def test_binary_garbage_is_not_an_image():
    with pytest.raises(ImageDecodeError, match="not an image in any format PIL can read"):
        load_image(bytes(range(256)) * 4)


def test_zero_size_png():
    with pytest.raises(ImageDecodeError, match=r"PNG with zero size \(0x4\)"):
        load_image(png_with_size(0, 4))


@pytest.mark.parametrize("source", [np.zeros((0, 5, 3), np.uint8), Image.new("RGB", (0, 0))],
                         ids=["array", "pil"])
def test_zero_size_in_memory_images(source):
    with pytest.raises(ImageDecodeError, match="zero size"):
        load_image(source)


def test_decompression_bomb_over_pil_limit_is_refused_from_the_header():
    with pytest.raises(ImageDecodeError, match="possible decompression bomb"):
        load_image(png_with_size(30000, 30000))


def test_image_over_our_limit_is_refused_before_decoding_without_pil_warning():
    # 90 MP is over PIL's warning threshold (89.5 MP) and over our 50 MP default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDecodeError, match=r"10000x9000 = 90,000,000 pixels, over the limit of 50,000,000"):
            load_image(png_with_size(10000, 9000))


def test_pixel_limit_is_configurable(monkeypatch):
    data = encode(noise_image(20, 20), "PNG")
    with pytest.raises(ImageDecodeError, match="over the limit of 100 "):
        load_image(data, max_pixels=100)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(ImageDecodeError, match="400 pixels, over the limit of 399"):
        load_image(data)
    assert load_image(data, max_pixels=400).size == (20, 20)


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 4, 3), np.float32), "dtype float32; expected uint8"),
    (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"shape \(2, 4, 4, 3\)"),
    (np.zeros(5, np.uint8), r"shape \(5,\)"),
])
def test_wrong_array_dtype_or_shape(array, message):
    with pytest.raises(ImageDecodeError, match=message):
        load_image(array)


def test_unsupported_source_type():
    with pytest.raises(ImageDecodeError, match="unsupported image source of type int"):
        load_image(42)


def test_image_decode_error_is_a_spliperror():
    assert issubclass(ImageDecodeError, SpLIPError)
