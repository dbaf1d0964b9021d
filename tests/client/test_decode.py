"""Decoding real image files: EXIF orientation, colour modes, bit depths, and precise errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from facialattr.client.decode import DecodeError, decode_image, jpeg_exif_orientation
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


def _png_declaring(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A valid PNG header claiming a huge canvas, with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
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


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    sparse = tmp_path / "x.jpg"
    with open(sparse, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GB that take no disk: reading it would take 3 GB of memory
    with pytest.raises(DecodeError) as info:
        decode_image(sparse)
    assert info.value.kind == "too_large" and "exceeds the limit" in str(info.value) and str(sparse) in str(info.value)


def test_the_file_size_limit_is_a_setting(tmp_path):
    path = _save(tmp_path, "x.png", Image.fromarray(_asymmetric_rgb()))
    size = path.stat().st_size
    assert decode_image(path, max_file_bytes=size).shape == (40, 24, 3)
    with pytest.raises(DecodeError, match="exceeds the limit") as info:
        decode_image(path, max_file_bytes=size - 1)
    assert info.value.kind == "too_large"


# (what, array, cv2 writes it as PNG, decoded bytes = pixels x channels x bytes per sample)
DECODE_SIZES = [
    ("8-bit RGB", np.zeros((30, 20, 3), np.uint8), 30 * 20 * 3),
    ("8-bit RGBA", np.zeros((30, 20, 4), np.uint8), 30 * 20 * 4),
    ("16-bit RGBA", np.zeros((30, 20, 4), np.uint16), 30 * 20 * 4 * 2),
    ("16-bit gray", np.zeros((30, 20), np.uint16), 30 * 20 * 2),
]


@pytest.mark.parametrize("what,array,decoded", DECODE_SIZES, ids=[d[0] for d in DECODE_SIZES])
def test_the_decode_limit_counts_channels_and_bytes_per_sample_from_the_header(tmp_path, what, array, decoded):
    import cv2

    path = tmp_path / "x.png"
    assert cv2.imwrite(str(path), array)
    assert decode_image(path, max_decode_bytes=decoded).shape == (30, 20, 3)
    with pytest.raises(DecodeError, match="decoded exceeds the limit") as info:
        decode_image(path, max_decode_bytes=decoded - 1)
    assert info.value.kind == "too_large"


def test_a_49_megapixel_16_bit_rgba_png_is_refused_by_default_from_its_header(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_declaring(7000, 7000, bit_depth=16, colour_type=6))
    with pytest.raises(DecodeError, match="392000000 bytes decoded exceeds") as info:
        decode_image(path)
    assert info.value.kind == "too_large"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "I"])
def test_conversion_to_rgb8_equals_exact_rounding_for_every_mode(mode):
    from facialattr.client.decode import to_rgb8

    rng = np.random.default_rng(3)
    if mode in ("RGBA", "LA"):
        image = Image.fromarray(rng.integers(0, 256, (70, 50, 4), dtype=np.uint8), "RGBA").convert(mode)
        rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
        alpha = rgba[..., 3:] / 255
        expected = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha))
    else:
        values = rng.integers(0, 65536, (70, 50)).astype(np.uint16 if mode == "I;16" else np.int32)
        image = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values, mode)
        assert image.mode == mode
        expected = np.repeat(np.rint(values.astype(np.float64) / 257)[..., None], 3, axis=2)
    np.testing.assert_array_equal(to_rgb8(image), expected.astype(np.uint8))
