"""Which names are images: every suffix in the one set decodes through the client's decoder, from a real file."""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.client.decode import decode_image
from facialattr.errors import InputError
from facialattr.imagefiles import IMAGE_SUFFIXES, image_files, is_image_name


@pytest.mark.parametrize("suffix", sorted(IMAGE_SUFFIXES))
def test_every_image_suffix_is_a_format_the_client_decodes(tmp_path, suffix):
    from PIL import Image

    pixels = np.zeros((12, 10, 3), np.uint8)
    pixels[:6] = (200, 40, 40)
    path = tmp_path / f"face{suffix.upper()}"  # suffixes match in any case
    fmt = Image.registered_extensions()[suffix]
    image = Image.fromarray(pixels)
    (image.convert("L") if fmt == "PPM" and suffix == ".pgm" else image).save(path, format=fmt)
    decoded = decode_image(path)
    assert decoded.shape == (12, 10, 3) and decoded.dtype == np.uint8
    assert is_image_name(path.name)
    assert decoded[:6].mean() > decoded[6:].mean() + 30  # the picture, not a blank canvas


@pytest.mark.parametrize("name,expected", [
    ("a.JPG", True), ("b.jfif", True), ("c.tiff", True), ("d.txt", False), ("e.jpg.part", False), ("jpg", False),
    ("f.heic", False),  # neither libjpeg-turbo nor Pillow decodes it here
])
def test_is_image_name_looks_at_the_suffix_only(name, expected):
    assert is_image_name(name) is expected


def test_image_files_lists_visible_image_files_in_name_order(tmp_path):
    for name in ("b.png", "a.jpg", "C.JPEG", "notes.txt", ".hidden.jpg", "._a.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    assert [p.name for p in image_files(tmp_path)] == ["C.JPEG", "a.jpg", "b.png"]


def test_image_files_of_a_missing_folder_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        image_files(tmp_path / "nowhere")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="file.jpg: not a folder"):
        image_files(tmp_path / "file.jpg")
