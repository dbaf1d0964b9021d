"""Sample photos the project may redistribute: made at run time from scikit-image's public-domain images.

CelebA images are non-commercial and never ship with the project, so the quick
start scores these instead. Face crops are framed like CelebA's aligned images
(178x218, eyes about 111 px from the top), the framing the model was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facialattr.extras import require_extra

log = logging.getLogger(__name__)

# (left, top, right, bottom) in the 512x512 source photos; found by eye-position, scale about 1:1.
_ASTRONAUT_FACE = (136, 0, 314, 218)
_CAMERAMAN_FACE = (157, 24, 335, 242)


def make_sample_folder(dest: Path) -> list[Path]:
    """Write the sample images (and one deliberately broken file) into ``dest``; returns their paths.

    Raises MissingExtraError naming the ``demo`` extra and its install command when scikit-image is missing.
    """
    require_extra("demo-samples", what="facialattr demo without a folder (its sample photos)",
                  instead="give it a folder of face photos")
    from PIL import Image
    from skimage import data

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    astronaut = data.astronaut()
    face = _crop(astronaut, _ASTRONAUT_FACE)
    images: dict[str, np.ndarray] = {
        "astronaut_face.jpg": face,
        "astronaut_face_mirrored.jpg": face[:, ::-1],
        "astronaut_face_dim.jpg": (face * 0.55).astype(np.uint8),
        "astronaut_face_gray.png": np.asarray(Image.fromarray(face).convert("L")),
        "astronaut_full_photo.jpg": astronaut,
        "cameraman_face.png": _crop(data.camera(), _CAMERAMAN_FACE),
        "chelsea_the_cat.jpg": data.chelsea(),
    }
    written = []
    for name, pixels in images.items():
        path = dest / name
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=92)
        written.append(path)
    # A truncated JPEG: the run must report it as an error row and go on.
    broken = dest / "broken_download.jpg"
    broken.write_bytes((dest / "astronaut_face.jpg").read_bytes()[:600])
    written.append(broken)
    log.info("wrote %d sample images to %s", len(written), dest)
    return written


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return image[top:bottom, left:right]
