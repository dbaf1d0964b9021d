"""Real-looking uint8 image batches for the export checks (parity, calibration, evaluation).

Files go through the client's own decoder and the core's preprocessing
(facialattr.client.preprocess.load_and_prepare), so the checks see exactly the pixels a
served client sends; arrays go straight to facialattr.preprocessing.prepare.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from facialattr.contract import Preprocessing
from facialattr.errors import InputError
from facialattr.extras import require_extra
from facialattr.imagefiles import IMAGE_SUFFIXES, image_files

log = logging.getLogger(__name__)

# scikit-image's bundled photographs: faces, animals, objects, outdoor scenes.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field")


def load_files(paths: Iterable[Path], preprocessing: Preprocessing) -> np.ndarray:
    """A [N, h, w, 3] uint8 batch from image files, decoded and prepared by the client's own code.

    Raises the client's ``DecodeError`` (an ``InputError``) naming the first file that does not decode.
    """
    from facialattr.client.preprocess import load_and_prepare

    h, w = preprocessing.size_hw
    arrays = [load_and_prepare(p, preprocessing) for p in paths]
    return np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8)


def load_folder(folder: Path, preprocessing: Preprocessing, *, count: int) -> np.ndarray:
    """``count`` prepared images [count, h, w, 3] uint8 from ``folder``, sorted by name, cycled if it holds fewer.

    Raises :class:`InputError` when ``folder`` is missing or holds no image, and the client's
    ``DecodeError`` (an ``InputError``) naming a file that does not decode.
    """
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    chosen = [files[i % len(files)] for i in range(count)]
    return load_files(chosen, preprocessing)


def sample_photos(preprocessing: Preprocessing, *, count: int, seed: int = 0) -> np.ndarray:
    """``count`` varied crops of scikit-image's sample photographs, with flips and brightness jitter.

    Real photographs exercise the network the way faces do (edges, textures, saturated
    regions), which constant or uniform-noise inputs do not.
    """
    from facialattr.preprocessing import prepare

    require_extra("parity-photos", what="the parity gate's default images (scikit-image's photos)",
                  instead="pass --parity-images DIR")
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = []
    for name in SAMPLE_PHOTOS:
        photo = getattr(skimage.data, name)()
        photos.append(photo if photo.ndim == 2 else photo[..., :3])  # prepare() takes grayscale too
    crop_only = Preprocessing(size_hw=preprocessing.size_hw, crop_box_xyxy=(0.0, 0.0, 1.0, 1.0),
                              channel_order=preprocessing.channel_order)
    batch = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.uniform(0.3, 1.0) * min(height, width))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        image = prepare(np.ascontiguousarray(photo[top:top + side, left:left + side]), crop_only)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        gain = rng.uniform(0.7, 1.3)
        batch.append(np.clip(image.astype(np.float32) * gain + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8))
    return np.stack(batch)
