"""Benchmark inputs: real face JPEGs from a folder, or synthetic frames when none are given.

Speed does not depend on pixel values, but decoding does, so the bulk and
baseline runs use real files; the serving sweep feeds pre-decoded arrays so that it
measures the server, not the decoder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facialattr.contract import Preprocessing
from facialattr.errors import InputError
from facialattr.imagefiles import IMAGE_SUFFIXES, image_files

log = logging.getLogger(__name__)


def list_images(folder: Path, *, limit: int | None = None) -> list[Path]:
    """The first ``limit`` (all when None) image files of ``folder`` in name order (a reproducible sample).

    Raises :class:`InputError` when ``folder`` is missing or holds no image file.
    """
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files[:limit] if limit else files


def prepare_files(files: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """Decode, crop and resize every file the way the client does: uint8 [N, h, w, 3].

    Raises the client's ``DecodeError`` (an ``InputError``) naming the first file that does not decode.
    """
    from facialattr.client.preprocess import load_and_prepare

    return np.stack([load_and_prepare(f, preprocessing) for f in files])


def synthetic_images(n: int, size_hw: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """``n`` uniform-noise uint8 frames [n, h, w, 3] at ``size_hw`` (pixels), the same for the same ``seed``."""
    h, w = size_hw
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def benchmark_images(folder: Path | None, preprocessing: Preprocessing, *, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` prepared real images from ``folder``, or ``limit`` synthetic ones when it is None.

    Raises :class:`InputError` when ``folder`` is missing or holds no image, or a file does not decode.
    """
    if folder is None:
        log.info("no --images: using %d synthetic %s frames", limit, preprocessing.size_hw)
        return synthetic_images(limit, preprocessing.size_hw, seed=seed)
    files = list_images(folder, limit=limit)
    log.info("decoding %d images from %s", len(files), folder)
    return prepare_files(files, preprocessing)
