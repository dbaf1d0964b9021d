"""The client's file-to-input step against an independent TensorFlow implementation of the contract.

The reference here is ``tf.io.decode_jpeg`` + ``crop_to_bounding_box`` + area resize
(float, unrounded). Decoding is bit-identical; the client's uint8 pixels are TensorFlow's
float pixels rounded, so they differ by at most 0.5 (plus TensorFlow's float32 error). Training's own
pipeline is compared in tests/training/test_pipeline_matches_client.py; the crop box,
resize and channel order as units in tests/core/test_preprocessing.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.client.preprocess import DecodeError, crop_box_pixels, decode_image, load_and_prepare, prepare
from facialattr.contract import Preprocessing

# Rounding to uint8, plus TensorFlow's float32 error: its area weights come from input bounds
# computed in float32, up to 6.3e-3 off the exact average when upscaling 178 -> 224 (measured).
MAX_ABS_DIFF = 0.5 + 0.01
MAX_MEAN_DIFF = 0.35


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


def test_load_and_prepare_is_decode_then_prepare(tmp_path, make_jpegs):
    preprocessing = Preprocessing(size_hw=(64, 64))
    for path in make_jpegs(tmp_path, 2, size_hw=(219, 177), seed=3):
        np.testing.assert_array_equal(load_and_prepare(path, preprocessing), prepare(decode_image(path), preprocessing))


def test_load_and_prepare_names_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(DecodeError, match="notes.jpg"):
        load_and_prepare(path, Preprocessing())
