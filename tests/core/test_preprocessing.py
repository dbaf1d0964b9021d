"""The preprocessing contract as code: crop box, area resize, channel order (pure units, no TensorFlow).

Training's TensorFlow pipeline is compared with these functions on real JPEG files in
tests/training/test_pipeline_matches_client.py; here the resize is checked against an
independent float64 area average written out below.
"""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.contract import CELEBA_FACE_CROP_XYXY, Preprocessing
from facialattr.errors import InputError
from facialattr.preprocessing import crop_box_pixels, crop_span, prepare, resize_area


@pytest.mark.parametrize("hw,box,expected", [
    ((218, 178), CELEBA_FACE_CROP_XYXY, (20, 0, 178, 178)),  # CelebA's aligned images: the shipped model's box
    ((109, 89), CELEBA_FACE_CROP_XYXY, (10, 0, 89, 89)),
    ((100, 200), (0.0, 0.0, 1.0, 1.0), (0, 0, 100, 200)),
    ((100, 200), (0.25, 0.1, 0.75, 0.9), (10, 50, 80, 100)),
    ((1, 1), CELEBA_FACE_CROP_XYXY, (0, 0, 1, 1)),
    ((2, 3), (0.4, 0.4, 0.6, 0.6), (1, 1, 1, 1)),  # top and bottom both round to 1: one row kept
    ((1, 1), (0.6, 0.6, 0.9, 0.9), (0, 0, 1, 1)),  # left rounds to the edge: clamped back inside
    ((5, 5), (0.0, 0.0, 0.05, 0.05), (0, 0, 1, 1)),  # right rounds to left: one column kept
])
def test_crop_box_rounds_fractions_to_pixels_and_keeps_at_least_one(hw, box, expected):
    assert crop_box_pixels(*hw, Preprocessing(crop_box_xyxy=box)) == expected


@pytest.mark.parametrize("hw", [(0, 5), (5, 0)])
def test_crop_box_of_an_empty_image_is_an_input_error(hw):
    with pytest.raises(InputError, match="0"):
        crop_box_pixels(*hw, Preprocessing())


def _area_reference(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The exact area average in float64: each output pixel the overlap-weighted mean of the input pixels it covers."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            start, end = i * scale, (i + 1) * scale
            for j in range(int(np.floor(start)), min(n_in, int(np.ceil(end)))):
                w[i, j] = max(0.0, min(end, j + 1) - max(start, j))
        return w / w.sum(axis=1, keepdims=True)

    wy, wx = weights(image.shape[0], size_hw[0]), weights(image.shape[1], size_hw[1])
    return np.einsum("yh,hwc,xw->yxc", wy, image.astype(np.float64), wx)


@pytest.mark.parametrize("source_hw,size_hw", [
    ((178, 178), (128, 128)),  # the shipped model: shrink
    ((256, 256), (128, 128)),  # exact 2x
    ((50, 50), (128, 128)),  # grow
    ((27, 129), (64, 64)),  # one axis grows, the other shrinks
    ((240, 33), (64, 64)),
    ((1, 1), (16, 16)),
    ((64, 64), (64, 64)),  # no resize at all
])
def test_resize_area_is_the_area_average_rounded_half_to_even(source_hw, size_hw):
    image = np.random.default_rng(sum(source_hw)).integers(0, 256, (*source_hw, 3), dtype=np.uint8)
    resized = resize_area(image, size_hw)
    exact = _area_reference(image, size_hw)
    assert resized.shape == (*size_hw, 3) and resized.dtype == np.uint8
    # Only float32 noise separates the two, so a value may round the other way only next to a tie.
    assert np.abs(resized - exact).max() <= 0.5 + 1e-3


def test_exact_ties_round_half_to_even_like_tensorflow():
    # A 2x downscale averages four integers: a quarter of the averages end in .5, exactly, in float32 too.
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    exact = image.reshape(128, 2, 128, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(resize_area(image, (128, 128)), np.rint(exact))


def test_prepare_crops_resizes_and_keeps_uint8():
    image = np.zeros((218, 178, 3), np.uint8)
    image[20:198] = 200  # the face square of a CelebA-framed image; the margins stay black
    face = prepare(image, Preprocessing(size_hw=(64, 64)))
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8 and face.flags.c_contiguous
    assert (face == 200).all()


def test_bgr_contract_reverses_channels():
    image = np.zeros((20, 20, 3), np.uint8)
    image[..., 0] = 255
    rgb = prepare(image, Preprocessing(size_hw=(10, 10), crop_box_xyxy=(0, 0, 1, 1)))
    bgr = prepare(image, Preprocessing(size_hw=(10, 10), crop_box_xyxy=(0, 0, 1, 1), channel_order="BGR"))
    assert rgb[0, 0].tolist() == [255, 0, 0] and bgr[0, 0].tolist() == [0, 0, 255]


def test_grayscale_array_is_accepted():
    assert prepare(np.full((30, 30), 7, np.uint8), Preprocessing(size_hw=(16, 16))).shape == (16, 16, 3)


@pytest.mark.parametrize("image", [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8), np.zeros((0, 5, 3), np.uint8)])
def test_wrong_arrays_are_refused(image):
    with pytest.raises(InputError):
        prepare(image, Preprocessing(size_hw=(16, 16)))


@pytest.mark.parametrize("size,fractions,expected", [
    (218, (20 / 218, 198 / 218), (20, 178)), (1, (0.0, 0.05), (0, 1)), (2, (0.4, 0.6), (1, 1)), (3, (0.9, 1.0), (2, 1)),
])
def test_crop_span_is_one_axis_of_the_crop_box(size, fractions, expected):
    assert crop_span(size, *fractions) == expected
    with pytest.raises(InputError, match="0 pixels"):
        crop_span(0, *fractions)
