"""The preprocessing contract as code: crop box, area resize, channel order, uint8.

The one home of how an image becomes the model's input. The client prepares
decoded arrays with :func:`prepare`; training's tf.data pipeline crops at the spans
:func:`crop_span` gives for the decoded image's size and does the same area resize
with TensorFlow ops (training/pipeline.py). Both round the area average
half to even into uint8, so on the same decoded pixels the two agree exactly but
where float32 error decides on which side of k + 0.5 an average falls: one level,
on none of the values at the shipped 128x128 and at most 2.3 % of them elsewhere
(tests/training/test_pipeline_matches_client.py measures it).

Scaling to [-1, 1] lives inside the model graph, not here.
"""

from __future__ import annotations

import numpy as np

from facialattr.contract import Preprocessing
from facialattr.errors import InputError

__all__ = ["crop_box_pixels", "crop_span", "prepare", "resize_area"]


def crop_box_pixels(height: int, width: int, preprocessing: Preprocessing) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) in pixels of the contract's crop of a ``height`` x ``width`` image.

    Each axis is :func:`crop_span` of the box's fractions along it, so every image of at
    least 1x1 gets a non-empty crop inside it. CelebA's aligned 218x178 (h x w) gives
    (20, 0, 178, 178). Raises :class:`InputError` when ``height`` or ``width`` is below 1.
    """
    if height < 1 or width < 1:
        raise InputError(f"cannot crop an image of {height}x{width} pixels")
    left_f, top_f, right_f, bottom_f = preprocessing.crop_box_xyxy
    top, crop_h = crop_span(height, top_f, bottom_f)
    left, crop_w = crop_span(width, left_f, right_f)
    return top, left, crop_h, crop_w


def crop_span(size: int, start_fraction: float, end_fraction: float) -> tuple[int, int]:
    """(start, length) in pixels of the fractions [start, end) of one axis ``size`` pixels long.

    Both ends are rounded to the nearest pixel (half to even); the span then keeps at least
    one pixel and stays inside the axis. One axis never depends on the other, which lets
    training's pipeline look spans up in a table built with this function.
    Raises :class:`InputError` when ``size`` is below 1.
    """
    if size < 1:
        raise InputError(f"cannot crop an axis of {size} pixels")
    start, end = round(start_fraction * size), round(end_fraction * size)
    # A tiny image must still give at least one pixel.
    end = max(end, start + 1)
    start, end = min(start, size - 1), min(end, size)
    return start, end - start


def resize_area(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-resize a uint8 [H, W, C] array to ``size_hw`` (pixels): uint8, rounded half to even.

    The same arithmetic as TensorFlow's ``tf.image.resize(method="area")`` followed by
    ``round`` (what training does), computed in float32 with OpenCV.
    """
    import cv2

    h, w = size_hw
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (h, w):
        return np.ascontiguousarray(image)
    pixels = np.ascontiguousarray(image, dtype=np.float32)
    # OpenCV's INTER_AREA averages areas only when neither axis grows; with one axis shrinking and
    # the other growing it samples the shrinking one bilinearly (skipping pixels: up to 121 levels
    # off TensorFlow's on a 33x129 crop). Area resizing is separable, so one axis at a time is exact.
    if (h > src_h) != (w > src_w):
        pixels = cv2.resize(pixels, (w, src_h), interpolation=cv2.INTER_AREA)
    pixels = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
    # uint8 INTER_AREA would round upscaled pixels in 11-bit fixed point (1 level off TensorFlow on
    # 8.6 % of them at 224 px) and exact 2x averages half up; float32 then round half to even is
    # TensorFlow's float32 area average then tf.round. convertScaleAbs rounds half to even (cvRound)
    # and saturates in one pass, as fast as the uint8 resize alone; an average of uint8 pixels is >= 0.
    return cv2.convertScaleAbs(pixels).reshape(h, w, *image.shape[2:])


def prepare(image_rgb: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The model's uint8 [h, w, 3] input (``preprocessing.size_hw``) from a decoded uint8 RGB image.

    ``image_rgb`` is HxWx3 uint8 RGB of any size (HxW grayscale is accepted and repeated
    into three channels). Crops :func:`crop_box_pixels`, area-resizes, then reverses the
    channels when the contract says BGR. Raises :class:`InputError` for another dtype,
    another number of channels or an empty image.
    """
    image = _as_rgb(image_rgb)
    top, left, crop_h, crop_w = crop_box_pixels(image.shape[0], image.shape[1], preprocessing)
    face = resize_area(image[top : top + crop_h, left : left + crop_w], preprocessing.size_hw)
    if preprocessing.channel_order == "BGR":
        face = face[..., ::-1]
    return np.ascontiguousarray(face)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"empty image of shape {image.shape}")
    return image
