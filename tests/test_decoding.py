"""How an image of any size and aspect becomes S x S pixels: data.resize (crop, squash, pad), EXIF
orientation, and square images left alone."""

import io

import numpy as np
import pytest
from PIL import Image

from transferlab import decoding

RED, GREEN, BLUE = (250, 0, 0), (0, 250, 0), (0, 0, 250)


def wide_bands() -> bytes:
    """A 90 x 30 PNG: red, green and blue thirds from left to right."""
    pixels = np.zeros((30, 90, 3), np.uint8)
    pixels[:, :30], pixels[:, 30:60], pixels[:, 60:] = RED, GREEN, BLUE
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_at(pixels: np.ndarray, row: int, column: int) -> tuple[int, ...]:
    return tuple(int(v) for v in pixels[row, column])


def test_crop_keeps_the_centre_at_the_full_height():
    pixels = decoding.decode_image(wide_bands(), 30, "crop")
    assert pixels.shape == (30, 30, 3)
    assert (pixels == GREEN).all()  # the centre third, untouched


def test_squash_keeps_everything_and_loses_the_aspect():
    pixels = decoding.decode_image(wide_bands(), 30, "squash")
    assert colour_at(pixels, 15, 2) == RED and colour_at(pixels, 15, 15) == GREEN and colour_at(pixels, 15, 27) == BLUE


def test_pad_keeps_everything_and_the_aspect_with_black_bars():
    pixels = decoding.decode_image(wide_bands(), 30, "pad")
    assert (pixels[:9] == 0).all() and (pixels[-9:] == 0).all()  # 10 rows of image in the middle
    assert colour_at(pixels, 15, 2) == RED and colour_at(pixels, 15, 15) == GREEN and colour_at(pixels, 15, 27) == BLUE


@pytest.mark.parametrize("size", [16, 32, 48])
def test_a_square_image_is_the_same_under_every_mode_and_kept_as_is_at_its_size(size):
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    results = [decoding.decode_image(square, size, mode) for mode in ("crop", "squash", "pad")]
    assert all(np.array_equal(results[0], other) for other in results[1:])
    reference = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(results[0], reference)  # what the pipeline always stored


def test_a_photo_is_turned_upright_by_its_exif_orientation():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = RED  # stored landscape, red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=95)
    upright = decoding.decode_image(buffer.getvalue(), 40, "pad")
    # viewed upright it is portrait, red on top: padded left and right, red in the top half
    assert (upright[:, :8] == 0).all() and (upright[:, -8:] == 0).all()
    assert np.abs(upright[5, 20].astype(int) - RED).max() < 30
    assert upright[35, 20].max() < 30
