"""Decoding real image files: EXIF orientation, colour modes, bit depths, and precise errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from facialattr.client.decode import DecodeError, decode_image, jpeg_exif_orientation
from PIL import Image, ImageOps

from facialattr.errors import InputError


def _asymmetric_rgb(h=40, w=24) -> np.ndarray:
    """Smooth gradients (so JPEG keeps them) that look different under every flip and rotation."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + 2 * y) * 255 // (w + 2 * h - 3)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_asymmetric_rgb()).save(path, quality=95, exif=exif)
    assert jpeg_exif_orientation(path.read_bytes()) == orientation
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = decode_image(path)
    assert got.shape == expected.shape
    # Pillow decodes with the accurate DCT, the client with TensorFlow's default fast one: a few levels apart.
    assert np.abs(got.astype(int) - expected).max() <= 8


def _save(tmp_path, name, image: Image.Image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    path = _save(tmp_path, "g.jpg", Image.fromarray(_asymmetric_rgb()[..., 0]), quality=95)
    got = decode_image(path)
    assert got.shape == (40, 24, 3) and got.dtype == np.uint8
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    rgb = Image.fromarray(_asymmetric_rgb())
    path = _save(tmp_path, "c.jpg", rgb.convert("CMYK"), quality=95)
    got = decode_image(path)
    assert got.shape == (40, 24, 3)
    assert np.abs(got.astype(int) - np.asarray(Image.open(path).convert("RGB"))).max() <= 2


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    path = _save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))
    got = decode_image(path)
    assert got[0, 0].tolist() == [200, 0, 0]
    assert got[9, 9].tolist() == [255, 255, 255]


def test_sixteen_bit_grayscale_png_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    path = _save(tmp_path, "d.png", Image.fromarray(values))
    assert decode_image(path)[0, :, 0].tolist() == [0, 128, 255]


def test_palette_png_decodes_to_rgb(tmp_path):
    path = _save(tmp_path, "p.png", Image.fromarray(_asymmetric_rgb()).convert("P"))
    assert decode_image(path).shape == (40, 24, 3)


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge canvas, with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg(tmp_path):
    return _save(tmp_path, "ok.jpg", Image.fromarray(_asymmetric_rgb()), quality=90)


BAD_FILES = [
    # (name, how to make it, expected kind)
    ("missing.jpg", None, "not_found"),
    ("empty.jpg", lambda p, tmp: p.write_bytes(b""), "empty"),
    ("truncated.jpg", lambda p, tmp: p.write_bytes(_jpeg(tmp).read_bytes()[:400]), "corrupt"),
    ("text.jpg", lambda p, tmp: p.write_text("not an image\n"), "unsupported_format"),
    ("bomb.png", lambda p, tmp: p.write_bytes(_png_declaring(100_000, 100_000)), "too_large"),
    ("folder.jpg", lambda p, tmp: p.mkdir(), "not_a_file"),
]


@pytest.mark.parametrize("name,make,kind", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_raises_input_error_naming_the_file(tmp_path, name, make, kind):
    path = tmp_path / name
    if make is not None:
        make(path, tmp_path)
    with pytest.raises(InputError) as info:
        decode_image(path)
    assert isinstance(info.value, DecodeError) and info.value.kind == kind
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_pixel_limit_refuses_before_decoding(tmp_path, suffix):
    path = _save(tmp_path, f"x.{suffix}", Image.fromarray(_asymmetric_rgb()))
    assert decode_image(path, max_pixels=40 * 24).shape == (40, 24, 3)
    with pytest.raises(DecodeError) as info:
        decode_image(path, max_pixels=40 * 24 - 1)
    assert info.value.kind == "too_large"
