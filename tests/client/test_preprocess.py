"""The client's crop/resize/channel order against training's TensorFlow preprocessing, on the same files.

Two references: training's own ``facialattr.training.pipeline.load_face`` (the
tf.data function the model is trained through) and an independent TensorFlow
implementation of the contract (``crop_to_bounding_box`` + area resize).

Tolerance (measured on CelebA val images and on these synthetic ones): decoding is
bit-identical to ``tf.io.decode_jpeg`` with its default settings; after crop and
area resize the uint8 client pixels differ from TensorFlow's float pixels by at
most 0.5 when downscaling (rounding only) and by under 1.0 when upscaling
(OpenCV's INTER_AREA interpolates bilinearly there). The test allows 1.0 per pixel
and a mean of 0.35.
"""

from __future__ import annotations

import numpy as np
import pytest
from facialattr.client.preprocess import crop_box_pixels, decode_image, prepare

from facialattr.contract import CELEBA_FACE_CROP_XYXY, Preprocessing
from facialattr.errors import InputError

MAX_ABS_DIFF = 1.0
MAX_MEAN_DIFF = 0.35


@pytest.mark.parametrize("hw,box,expected", [
    ((218, 178), CELEBA_FACE_CROP_XYXY, (20, 0, 178, 178)),
    ((109, 89), CELEBA_FACE_CROP_XYXY, (10, 0, 89, 89)),
    ((100, 200), (0.0, 0.0, 1.0, 1.0), (0, 0, 100, 200)),
    ((100, 200), (0.25, 0.1, 0.75, 0.9), (10, 50, 80, 100)),
    ((1, 1), CELEBA_FACE_CROP_XYXY, (0, 0, 1, 1)),
])
def test_crop_box_pixels_rounds_fractions_to_pixels(hw, box, expected):
    assert crop_box_pixels(*hw, Preprocessing(crop_box_xyxy=box)) == expected


def _tf_reference(path, preprocessing):
    """An independent TensorFlow implementation of the contract (training/pipeline.py does the same)."""
    tf = pytest.importorskip("tensorflow")
    image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
    top, left, h, w = crop_box_pixels(int(image.shape[0]), int(image.shape[1]), preprocessing)
    crop = tf.image.crop_to_bounding_box(image, top, left, h, w)
    resized = tf.image.resize(crop, preprocessing.size_hw, method="area").numpy()
    if preprocessing.channel_order == "BGR":
        resized = resized[..., ::-1]
    return image.numpy(), resized


@pytest.mark.parametrize("size_hw,source_hw,channel_order", [
    ((128, 128), (218, 178), "RGB"),
    ((64, 64), (218, 178), "BGR"),
    ((224, 224), (218, 178), "RGB"),
    ((96, 80), (300, 250), "RGB"),
])
def test_prepare_matches_tensorflow_preprocessing_on_the_same_files(tmp_path, make_jpegs, size_hw, source_hw, channel_order):
    preprocessing = Preprocessing(size_hw=size_hw, channel_order=channel_order)
    diffs = []
    for path in make_jpegs(tmp_path, 4, size_hw=source_hw, seed=sum(size_hw)):
        tf_decoded, tf_prepared = _tf_reference(path, preprocessing)
        decoded = decode_image(path)
        np.testing.assert_array_equal(decoded, tf_decoded)
        prepared = prepare(decoded, preprocessing)
        assert prepared.shape == (*size_hw, 3) and prepared.dtype == np.uint8
        diffs.append(np.abs(prepared.astype(np.float32) - tf_prepared))
    diffs = np.stack(diffs)
    assert diffs.max() <= MAX_ABS_DIFF
    assert diffs.mean() <= MAX_MEAN_DIFF


def _training_load_face():
    pytest.importorskip("tensorflow")
    try:
        from facialattr.training.pipeline import load_face
    except ImportError:
        pytest.skip("training/pipeline.py is not in this install")
    return load_face


@pytest.mark.parametrize("size_hw,source_hw", [((128, 128), (218, 178)), ((64, 64), (218, 178)), ((160, 160), (300, 250))])
def test_prepare_matches_the_training_pipeline_on_the_same_files(tmp_path, make_jpegs, size_hw, source_hw):
    load_face = _training_load_face()
    preprocessing = Preprocessing(size_hw=size_hw)
    diffs = []
    for path in make_jpegs(tmp_path, 4, size_hw=source_hw, seed=7):
        trained_on = load_face(str(path), size_hw, preprocessing.crop_box_xyxy).numpy()
        served = prepare(decode_image(path), preprocessing)
        assert served.shape == trained_on.shape and served.dtype == trained_on.dtype == np.uint8
        diffs.append(np.abs(served.astype(int) - trained_on))
    diffs = np.stack(diffs)
    # Both sides round to uint8 here, so rounding the same float differently is the only allowed difference.
    assert diffs.max() <= 1
    assert diffs.mean() <= MAX_MEAN_DIFF


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
