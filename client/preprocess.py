"""Image files to the model's input: the client's decoder, then the core's preprocessing.

The crop box, area resize and channel order are defined once, in
:mod:`facialattr.preprocessing`; this module re-exports :func:`prepare` and
:func:`crop_box_pixels` for the client's callers and adds the file step
(:func:`load_and_prepare`). Training does not call this module: its tf.data
pipeline decodes with ``tf.io.decode_jpeg`` (bit-identical to the client's JPEG
decoder, see client/decode.py) and crops at the box :func:`crop_box_pixels` gives,
resizing with TensorFlow's area resize, which :func:`prepare` reproduces
(tests/training/test_pipeline_matches_client.py states the measured tolerance).
"""

from __future__ import annotations

import os

import numpy as np

from facialattr.client.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from facialattr.contract import Preprocessing
from facialattr.errors import ErrorKind, InputError
from facialattr.preprocessing import crop_box_pixels, prepare

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "crop_box_pixels", "decode_image", "load_and_prepare", "prepare"]


def load_and_prepare(path: os.PathLike | str, preprocessing: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file and prepare it: the model's uint8 [h, w, 3] input.

    ``max_pixels`` bounds the decoded image (width x height). Raises :class:`DecodeError`
    naming the file when it cannot be read or decoded, is over the limits, or decodes to
    something :func:`prepare` refuses.
    """
    image = decode_image(path, max_pixels=max_pixels)
    try:
        return prepare(image, preprocessing)
    except InputError as exc:
        raise DecodeError(path, str(exc), kind=ErrorKind.UNSUPPORTED_FORMAT) from None
