"""Training's tensors equal the client's on the same real JPEG files.

Training (training/pipeline.py) decodes with ``tf.io.decode_jpeg``, crops at the box
:func:`facialattr.preprocessing.crop_box_pixels` gives and area-resizes with TensorFlow;
the client decodes with simplejpeg (client/decode.py) and prepares with
:func:`facialattr.preprocessing.prepare`. Measured here, per step:

- decoding: bit-identical. Both are libjpeg-turbo with the same settings (integer-fast
  DCT, fancy upsampling). Pillow's defaults (accurate integer DCT) differ by up to 6
  levels on these files (measured), which is why the client does not decode JPEGs with Pillow.
- crop box: one function computes it for both, so it is identical by construction.
- resize: both compute the float32 area average and round it half to even. Their float
  errors differ: TensorFlow computes each output pixel's input bounds in float32 (up to
  6e-3 off the exact average when upscaling 178 -> 224, measured; OpenCV stays within
  4e-5), so a value whose exact average is k + 0.5, or within that error of it, can
  round the other way: a difference of exactly one level. Exact ties are common when
  the scale is a simple ratio (256 -> 224 is 8/7) and impossible from 178x178 crops to
  128x128 (the exact average is a multiple of 1/7921). Measured on these 33 files: no
  flip at the shipped 128x128; 1 of 405,504 values at 64x64; 353 of 760,320 (4.6e-4)
  at 96x80; 11,300 of 4,967,424 (2.3e-3) at 224x224, 2.3 % of the values of the
  314x256 files alone; 72 of 158,400 (4.5e-4) for the 40x40 contract below.
  MAX_ROUNDING_FLIPS allows about four times the worst batch. (The client's former uint8 OpenCV
  resize was off by up to 113 levels on the mixed-axis files, and on an exact 2x
  downscale, where a quarter of the averages are ties, it rounds them half up: one
  level off on 12.7 % of the values of a random image.)

Files with an EXIF orientation are not compared: the client turns them upright and
``tf.io.decode_jpeg`` does not (CelebA's aligned images carry none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facialattr.client.decode import decode_image
from facialattr.contract import CELEBA_ALIGNED_SIZE_HW, CELEBA_FACE_CROP_XYXY, Preprocessing
from facialattr.preprocessing import crop_box_pixels, prepare

tf = pytest.importorskip("tensorflow")
pipeline = pytest.importorskip("facialattr.training.pipeline")

SHIPPED_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
# Share of values allowed to round the other way (each by exactly one level); see the module docstring.
MAX_ROUNDING_FLIPS = 1 / 100

# (height, width) of the source files: CelebA's own, odd sizes, sizes where the 1-pixel clamps act,
# an exact 2x downscale (314x256 crops to 256x256: half-way averages everywhere), crops that grow
# (50x50, 7x5) and crops that shrink one axis while growing the other (33x129, 300x60).
SOURCE_SIZES_HW = [(218, 178), (219, 177), (109, 89), (314, 256), (640, 481), (50, 50), (7, 5), (2, 3), (1, 1),
                   (33, 129), (300, 60)]


def write_jpeg(path, size_hw, *, seed: int, subsampling: int = 2) -> None:
    """A photo-like JPEG (smooth colour field, sharp-edged blocks, sensor noise) written by Pillow."""
    import cv2
    from PIL import Image

    h, w = size_hw
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    for _ in range(3):
        y, x = rng.integers(0, h), rng.integers(0, w)
        image[y : y + max(1, h // 4), x : x + max(1, w // 4)] = rng.integers(0, 256, 3)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, quality=90, subsampling=subsampling)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """One real JPEG per source size and chroma subsampling (4:4:4, 4:2:2, 4:2:0)."""
    folder = tmp_path_factory.mktemp("jpegs")
    paths = []
    for i, size_hw in enumerate(SOURCE_SIZES_HW):
        for subsampling in (0, 1, 2):
            path = folder / f"{size_hw[0]}x{size_hw[1]}_s{subsampling}.jpg"
            write_jpeg(path, size_hw, seed=i, subsampling=subsampling)
            paths.append(path)
    return paths


def assert_equal_but_rounding_flips(trained_on: np.ndarray, served: np.ndarray) -> None:
    assert served.shape == trained_on.shape and served.dtype == trained_on.dtype == np.uint8
    diff = np.abs(served.astype(np.int16) - trained_on)
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= MAX_ROUNDING_FLIPS * diff.size


def test_client_decodes_every_jpeg_bit_identically_to_training(jpegs):
    for path in jpegs:
        np.testing.assert_array_equal(decode_image(path), tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3).numpy(),
                                      err_msg=path.name)


@pytest.mark.parametrize("size_hw", [(128, 128), (64, 64), (96, 80), (224, 224)])
def test_training_batches_equal_the_client_inputs_on_the_same_files(jpegs, size_hw):
    batches = pipeline.image_dataset(jpegs, size_hw, batch_size=8)
    trained_on = np.concatenate([b.numpy() for b in batches])
    served = np.stack([prepare(decode_image(p), Preprocessing(size_hw=size_hw)) for p in jpegs])
    assert_equal_but_rounding_flips(trained_on, served)


@pytest.mark.parametrize("size_hw,crop_box_xyxy,channel_order", [
    ((32, 32), (0.4, 0.4, 0.6, 0.6), "RGB"),  # rounds to an empty box on small images: the clamps keep one pixel
    ((16, 24), (0.0, 0.5, 1.0, 1.0), "BGR"),
    ((40, 40), (0.1, 0.0, 0.9, 0.5), "RGB"),
])
def test_load_face_follows_any_contract_like_the_client(jpegs, size_hw, crop_box_xyxy, channel_order):
    preprocessing = Preprocessing(size_hw=size_hw, crop_box_xyxy=crop_box_xyxy, channel_order=channel_order)
    trained_on = np.stack([pipeline.load_face(tf.constant(str(p)), preprocessing).numpy() for p in jpegs])
    served = np.stack([prepare(decode_image(p), preprocessing) for p in jpegs])
    assert_equal_but_rounding_flips(trained_on, served)


def test_axes_longer_than_the_span_table_call_the_shared_function(jpegs, monkeypatch):
    monkeypatch.setattr(pipeline, "SPAN_TABLE_PIXELS", 64)  # most test files have an axis over 64 px
    preprocessing = Preprocessing(size_hw=(48, 48), crop_box_xyxy=(0.1, 0.2, 0.7, 0.9))
    trained_on = np.stack([pipeline.load_face(tf.constant(str(p)), preprocessing).numpy() for p in jpegs])
    served = np.stack([prepare(decode_image(p), preprocessing) for p in jpegs])
    assert_equal_but_rounding_flips(trained_on, served)


def _crop_box_as_trained(height: int, width: int) -> tuple[int, int, int, int]:
    """The box the shipped model was trained with: the pipeline's old float32 TensorFlow arithmetic, no clamps."""
    shape = tf.constant([height, width], tf.float32)
    left, top, right, bottom = CELEBA_FACE_CROP_XYXY
    y0, y1 = (int(tf.cast(tf.round(f * shape[0]), tf.int32)) for f in (top, bottom))
    x0, x1 = (int(tf.cast(tf.round(f * shape[1]), tf.int32)) for f in (left, right))
    return y0, x0, y1 - y0, x1 - x0


def test_shipped_model_crop_box_for_celeba_images_is_unchanged():
    from facialattr import repository

    shipped = repository.load_model(SHIPPED_REPOSITORY).contract.preprocessing
    assert shipped.size_hw == (128, 128) and shipped.channel_order == "RGB"
    assert crop_box_pixels(*CELEBA_ALIGNED_SIZE_HW, shipped) == (20, 0, 178, 178) == _crop_box_as_trained(*CELEBA_ALIGNED_SIZE_HW)
    assert crop_box_pixels(*CELEBA_ALIGNED_SIZE_HW, Preprocessing(size_hw=(128, 128))) == (20, 0, 178, 178)
