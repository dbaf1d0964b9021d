"""Which file names are images: the suffixes the client's decoder can decode, in one place.

client/decode.py decodes JPEG with libjpeg-turbo and every other format with
Pillow; each suffix below is decoded from a real file by
tests/core/test_imagefiles.py. Folder walks (bulk scoring, CCTV image folders,
export and benchmark inputs) pick files by this set.
"""

from __future__ import annotations

import os
from pathlib import Path

from facialattr.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})

__all__ = ["IMAGE_SUFFIXES", "image_files", "is_image_name"]


def is_image_name(name: os.PathLike | str) -> bool:
    """True when ``name``'s suffix (any case) is one of :data:`IMAGE_SUFFIXES`; hidden names are not excluded here."""
    return os.path.splitext(os.fsdecode(name))[1].lower() in IMAGE_SUFFIXES


def image_files(folder: os.PathLike | str) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name (a reproducible order).

    Picks regular files (or links to them) named with an image suffix and skips hidden
    names (such as macOS ``._x.jpg`` resource forks); subfolders are not entered.
    Raises :class:`InputError` naming ``folder`` when it is not a readable folder.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except NotADirectoryError:
        raise InputError(f"{folder}: not a folder") from None
    except FileNotFoundError:
        raise InputError(f"{folder}: image folder not found") from None
    except OSError as exc:
        raise InputError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
    return [p for p in entries if not p.name.startswith(".") and is_image_name(p.name) and p.is_file()]
