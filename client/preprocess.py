"""The client half of the preprocessing contract: crop, resize, channel order.

Scaling to [-1, 1] lives inside the model graph; the client only has to hand
over the same uint8 pixels training saw. Training (tf.data) crops with
``tf.image.crop_to_bounding_box`` at the pixel box :func:`crop_box_pixels`
computes and resizes with area interpolation; here OpenCV's ``INTER_AREA`` does
the same (tests/client/test_preprocess.py states the measured tolerance).
"""

from __future__ import annotations

import os

import numpy as np
from facialattr.client.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image

from facialattr.contract import Preprocessing
from facialattr.errors import InputError

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "crop_box_pixels", "decode_image", "load_and_prepare", "prepare"]


def crop_box_pixels(height: int, width: int, preprocessing: Preprocessing) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) in pixels for an image of ``height`` x ``width``.

    Fractions are rounded to the nearest pixel; CelebA's 218x178 gives (20, 0, 178, 178).
    Training must use this same function so both sides crop identical pixels.
    """
    left_f, top_f, right_f, bottom_f = preprocessing.crop_box_xyxy
    left, right = round(left_f * width), round(right_f * width)
    top, bottom = round(top_f * height), round(bottom_f * height)
    # A tiny image must still give at least one pixel.
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    left, top = min(left, width - 1), min(top, height - 1)
    right, bottom = min(right, width), min(bottom, height)
    return top, left, bottom - top, right - left


def prepare(image_rgb: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """HxWx3 uint8 RGB (any size; HxW grayscale accepted) -> the model's uint8 [h, w, 3] input."""
    import cv2

    image = _as_rgb(image_rgb)
    top, left, crop_h, crop_w = crop_box_pixels(image.shape[0], image.shape[1], preprocessing)
    crop = image[top : top + crop_h, left : left + crop_w]
    h, w = preprocessing.size_hw
    if crop.shape[:2] != (h, w):
        crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)
    if preprocessing.channel_order == "BGR":
        crop = crop[..., ::-1]
    return np.ascontiguousarray(crop)


def load_and_prepare(path: os.PathLike | str, preprocessing: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file and prepare it; a DecodeError names the file."""
    image = decode_image(path, max_pixels=max_pixels)
    try:
        return prepare(image, preprocessing)
    except InputError as exc:
        raise DecodeError(path, str(exc), kind="unsupported_format") from None


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
