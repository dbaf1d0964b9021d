"""tf.data input pipelines: parallel JPEG decode, the contract's face crop, resize, augment.

The crop box comes from the one definition of the preprocessing contract
(:func:`facialattr.preprocessing.crop_span`, per axis of each decoded image);
TensorFlow does the pixel work with the arithmetic :func:`facialattr.preprocessing.prepare`
reproduces for clients (area resize, round half to even, uint8, channel order), so the
model trains on what it will serve (tests/training/test_pipeline_matches_client.py).
Augmentation exists only in the training path; validation images are the plain view.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from facialattr.contract import Preprocessing
from facialattr.preprocessing import crop_span
from facialattr.training.config import Augmentation

AUTOTUNE = tf.data.AUTOTUNE
# Axes up to this many pixels look their crop span up in a table of crop_span's answers; a longer
# one calls crop_span through tf.numpy_function (a Python call per image halves tf.data's rate).
SPAN_TABLE_PIXELS = 8192


def configure_threads(num_threads: int) -> None:
    """Cap TensorFlow's intra- and inter-op thread pools at ``num_threads`` (other people share these cores).

    A no-op once TensorFlow has initialised its pools in this process.
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    except RuntimeError:  # already initialised in this process; keep what it has
        pass


def load_face(path: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
    """One JPEG file (a path string tensor) -> the model's uint8 [h, w, 3] input per ``preprocessing``.

    Decoded with TensorFlow's default JPEG settings (what client/decode.py matches bit for bit),
    cropped at the spans :func:`crop_span` gives for the decoded size (the client's
    ``crop_box_pixels``), area-resized to ``preprocessing.size_hw`` (pixels) and rounded half to
    even. A file that is not a JPEG fails the dataset iteration with ``InvalidArgumentError``.
    """
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    shape = tf.shape(image)
    left_f, top_f, right_f, bottom_f = preprocessing.crop_box_xyxy
    top, crop_h = _span(shape[0], top_f, bottom_f)
    left, crop_w = _span(shape[1], left_f, right_f)
    face = image[top:top + crop_h, left:left + crop_w]
    resized = tf.image.resize(face, preprocessing.size_hw, method="area")
    pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    if preprocessing.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    return pixels


@functools.lru_cache(maxsize=16)
def _span_table(start_fraction: float, end_fraction: float, pixels: int) -> np.ndarray:
    """crop_span for every axis length 1..``pixels``: int32 [pixels, 2] (start, length)."""
    return np.asarray([crop_span(n, start_fraction, end_fraction) for n in range(1, pixels + 1)], np.int32)


def _span(size: tf.Tensor, start_fraction: float, end_fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(start, length) of one axis, from the shared crop_span: looked up, or called for a longer axis."""
    table = tf.constant(_span_table(start_fraction, end_fraction, SPAN_TABLE_PIXELS))

    def call() -> tf.Tensor:
        span = tf.numpy_function(lambda n: np.asarray(crop_span(int(n), start_fraction, end_fraction), np.int32),
                                 [size], tf.int32, stateful=False, name="crop_span")
        return tf.reshape(span, [2])

    span = tf.cond(size <= table.shape[0], lambda: tf.gather(table, size - 1), call)
    return span[0], span[1]


def augment(images: tf.Tensor, aug: Augmentation, seed: tf.Tensor) -> tf.Tensor:
    """Randomly transform a uint8 batch [N, H, W, 3]; returns uint8 (what a client would send)."""
    x = tf.cast(images, tf.float32)
    n = tf.shape(x)[0]
    h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 8)
    if aug.flip:
        flip = tf.random.stateless_uniform([n, 1, 1, 1], seeds[0]) < 0.5
        x = tf.where(flip, x[:, :, ::-1], x)
    angle = tf.random.stateless_uniform([n], seeds[1], -1, 1) * aug.rotation_deg * np.pi / 180
    scale = 1 + tf.random.stateless_uniform([n], seeds[2], -1, 1) * aug.zoom
    dx = tf.random.stateless_uniform([n], seeds[3], -1, 1) * aug.translation * w
    dy = tf.random.stateless_uniform([n], seeds[4], -1, 1) * aug.translation * h
    x = _affine(x, angle, scale, dx, dy, h, w)
    bright = tf.random.stateless_uniform([n, 1, 1, 1], seeds[5], -1, 1) * aug.brightness * 255
    contrast = 1 + tf.random.stateless_uniform([n, 1, 1, 1], seeds[6], -1, 1) * aug.contrast
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * contrast + mean + bright
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def _affine(x, angle, scale, dx, dy, h, w):
    """Rotate/zoom/shift about the centre; edges are filled by reflection (no black wedges)."""
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # ImageProjectiveTransformV3 maps output (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    a2 = cx - cos * cx + sin * cy - dx
    b2 = cy - sin * cx - cos * cy - dy
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def image_dataset(paths: Sequence, size_hw: Sequence[int], *, batch_size: int, labels: np.ndarray | None = None,
                  shuffle_seed: int | None = None, augmentation: Augmentation | None = None,
                  aug_seed: int = 0, parallel_calls: int = 2) -> tf.data.Dataset:
    """Batches of uint8 [N, h, w, 3] faces (and 0/1 float32 labels [N, attributes] when given), in file order unless shuffled.

    ``size_hw`` (pixels) with the contract's CelebA crop and RGB order (the
    :class:`Preprocessing` defaults, what training writes into the contract); ``augmentation``
    (training only) is seeded by ``aug_seed`` and the batch index, so a rerun sees the same views.
    """
    preprocessing = Preprocessing(size_hw=tuple(size_hw))
    files = tf.constant([str(p) for p in paths])
    ds = tf.data.Dataset.from_tensor_slices(files if labels is None else (files, labels.astype(np.float32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def _load(path, *rest):
        return (load_face(path, preprocessing), *rest)

    ds = ds.map(_load, num_parallel_calls=parallel_calls, deterministic=True).batch(batch_size)
    if augmentation is not None:
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda batch, i: (augment(batch[0], augmentation, tf.stack([tf.cast(aug_seed, tf.int64), i])), *batch[1:]),
            num_parallel_calls=parallel_calls)
    if labels is None:
        ds = ds.map(lambda *b: b[0])
    return ds.prefetch(AUTOTUNE)
