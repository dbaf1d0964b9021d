"""Encoded image bytes to the model's input: the one decoder of the client and the server.

JPEGs go through simplejpeg (libjpeg-turbo, the fastest decoder measured on these
machines) with the same settings as TensorFlow's default ``tf.io.decode_jpeg``
(integer-fast DCT, fancy upsampling): bit-identical on CelebA and on the odd sizes
and chroma subsamplings of tests/training/test_pipeline_matches_client.py, so the
pixels match training's (Pillow's accurate DCT would be up to 6 levels off). The EXIF orientation is read
from the raw bytes (simplejpeg ignores it). Everything else, and the JPEG
colour spaces libjpeg-turbo cannot turn into RGB (CMYK, YCCK), goes through
Pillow: grayscale, palette, alpha, 16-bit and CMYK all end as 8-bit RGB.

Pure (bytes in, arrays out, no file access): the client (client/decode.py reads the
files) and the served bytes model (serving/encoded_model.py) call the same
:func:`decode_and_prepare` with the same limits, so server-side decoding gives the
client's pixels. Every failure is a :class:`DecodeError` (an ``InputError``) that
names its source and carries its :class:`~facialattr.errors.ErrorKind` for summaries.
"""

from __future__ import annotations

import functools
import os
import struct
import warnings

import numpy as np

from facialattr.contract import Preprocessing
from facialattr.errors import ErrorKind, InputError
from facialattr.preprocessing import prepare

# 50 megapixels: ~150 MB of RGB. Far beyond any face photo, small enough that a
# decompression bomb (a tiny file declaring a huge canvas) is refused before decoding.
DEFAULT_MAX_PIXELS = 50_000_000
# Files larger than this are refused before a byte is read (a face photo is kilobytes to a few MB).
DEFAULT_MAX_FILE_BYTES = 100 * 2**20
# The decoded samples (pixels x channels x bytes per sample, read from the header) must fit in this:
# a 50 MP 8-bit RGB photo (150 MB) passes, a 49 MP 16-bit RGBA PNG (392 MB) is refused.
DEFAULT_MAX_DECODE_BYTES = 256 * 2**20
# Rows converted at a time by to_rgb8, so its temporaries stay small whatever the image size.
_CONVERT_BLOCK_PIXELS = 1 << 20
# Transparent pixels are composited over white: the usual page colour behind cut-outs.
ALPHA_BACKGROUND = 255

_JPEG_SOI = b"\xff\xd8"


class DecodeError(InputError):
    """An input that will not be scored: ``path``, ``reason`` for people, ``kind`` for summaries and rows.

    The one form of a refused input from the moment it is refused (a folder walk, a read, a decode,
    the server's decoder) to its error row; the message is ``"PATH: REASON"``.
    """

    def __init__(self, path: os.PathLike | str, reason: str, *, kind: ErrorKind) -> None:
        super().__init__(f"{os.fsdecode(path)}: {reason}")
        self.path = os.fsdecode(path)
        self.reason = reason
        self.kind = ErrorKind(kind)

    def __reduce__(self):
        # Pickled by its fields (an Input holding it may go to another process): Exception's default would call
        # __init__ without ``kind``.
        return functools.partial(type(self), kind=self.kind), (self.path, self.reason)


def decode_and_prepare(
    data: bytes,
    preprocessing: Preprocessing,
    *,
    path: os.PathLike | str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """The model's uint8 [h, w, 3] input from one encoded image: decode, EXIF orientation, crop, resize.

    Raises :class:`DecodeError` naming ``path`` and nothing else: kind ``empty``, ``too_large``
    (over ``max_file_bytes`` encoded, or over ``max_pixels`` / ``max_decode_bytes`` from the
    header), ``corrupt``, ``unsupported_format``, or ``decoder_failure`` for a codec bug, so
    one bad image can only ever cost its own row.
    """
    if not data:
        raise DecodeError(path, "empty file", kind=ErrorKind.EMPTY)
    if len(data) > max_file_bytes:
        raise DecodeError(path, f"file of {len(data)} bytes exceeds the limit of {max_file_bytes} (--max-file-bytes)",
                          kind=ErrorKind.TOO_LARGE)
    try:
        image = decode_bytes(data, path=path, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
        try:
            return prepare(image, preprocessing)
        except InputError as exc:
            raise DecodeError(path, str(exc), kind=ErrorKind.UNSUPPORTED_FORMAT) from None
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError(path, "out of memory while decoding", kind=ErrorKind.TOO_LARGE) from None
    except Exception as exc:  # a codec bug on one file must not end a million-file run, nor fail a served batch
        raise DecodeError(path, f"decoder failed: {type(exc).__name__}: {exc}",
                          kind=ErrorKind.DECODER_FAILURE) from None


def decode_bytes(
    data: bytes,
    *,
    path: os.PathLike | str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB [H, W, 3]; ``path`` only names the source in errors.

    Raises :class:`DecodeError`: kind ``too_large`` over ``max_pixels`` or ``max_decode_bytes``
    (checked from the header), ``corrupt`` or ``unsupported_format`` otherwise.
    """
    limits = (max_pixels, max_decode_bytes)
    if data[:2] == _JPEG_SOI:
        image = _decode_jpeg_fast(data, path, limits)
        if image is not None:
            return image
    return _decode_with_pil(data, path, limits)


def _decode_jpeg_fast(data: bytes, path, limits: tuple[int, int]) -> np.ndarray | None:
    """simplejpeg for RGB/gray JPEGs; None hands the file to Pillow (CMYK, YCCK, odd headers)."""
    import simplejpeg

    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let Pillow produce the precise error, or decode what libjpeg-turbo won't
    _check_size(path, width, height, channels=3, bytes_per_sample=1, limits=limits)  # decoded as 8-bit RGB
    if colorspace not in ("Gray", "YCbCr", "RGB", "GRAY"):
        return None
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False, strict=True)
    except ValueError as exc:
        raise DecodeError(path, f"corrupt JPEG ({exc})", kind=ErrorKind.CORRUPT) from None
    return apply_orientation(image, jpeg_exif_orientation(data))


def _decode_with_pil(data: bytes, path, limits: tuple[int, int]) -> np.ndarray:
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(path, image.width, image.height, channels=len(image.getbands()),
                        bytes_per_sample=_bytes_per_sample(image), limits=limits)
            image.load()
            image = ImageOps.exif_transpose(image) or image
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(path, "not an image in a supported format", kind=ErrorKind.UNSUPPORTED_FORMAT) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(path, f"refused: {exc}", kind=ErrorKind.TOO_LARGE) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DecodeError(path, f"corrupt or truncated image ({exc})", kind=ErrorKind.CORRUPT) from None
    return to_rgb8(image, path)


def _bytes_per_sample(image) -> int:
    """Bytes of one stored sample, from the mode and the decoder's raw mode (16-bit PNG RGBA opens as "RGBA")."""
    if image.mode in ("I", "F"):
        return 4
    raw = str(image.tile[0][3]) if getattr(image, "tile", None) else ""
    return 2 if image.mode.startswith("I;16") or ";16" in raw else 1


def to_rgb8(image, path="<image>") -> np.ndarray:
    """Any Pillow image as uint8 RGB: 16-bit scaled down, alpha composited, CMYK/palette converted.

    Converted a block of rows at a time in integer arithmetic (equal to rounding the exact
    quotient), so the temporaries stay a few MB even for a 50-megapixel image. Returns uint8
    [H, W, 3]; raises :class:`DecodeError` (kind ``unsupported_format``) naming ``path`` for a
    mode Pillow cannot convert.
    """
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image)
        return _blockwise(values, _gray_float_to_rgb8 if mode == "F" else _gray16_to_rgb8)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _blockwise(np.asarray(image if mode == "RGBA" else image.convert("RGBA")), _composite_over_white)
    try:
        rgb = image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DecodeError(path, f"cannot convert colour mode {mode} to RGB ({exc})",
                          kind=ErrorKind.UNSUPPORTED_FORMAT) from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _blockwise(values: np.ndarray, convert) -> np.ndarray:
    out = np.empty((*values.shape[:2], 3), np.uint8)
    rows = max(1, _CONVERT_BLOCK_PIXELS // max(1, values.shape[1]))
    for top in range(0, values.shape[0], rows):
        out[top : top + rows] = convert(values[top : top + rows])
    return out


def _gray16_to_rgb8(block: np.ndarray) -> np.ndarray:
    # 16-bit sources use the full 0..65535 range ("I" images from 16-bit PNGs too): round(v / 257).
    v = np.clip(block.astype(np.int64), 0, 65535)
    return np.repeat(((v + 128) // 257).astype(np.uint8)[..., None], 3, axis=2)


def _gray_float_to_rgb8(block: np.ndarray) -> np.ndarray:
    gray = np.clip(np.rint(block.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    # round((rgb * a + 255 * (255 - a)) / 255): the exact quotient is never half-way, so this equals rint.
    rgb, alpha = rgba[..., :3].astype(np.uint32), rgba[..., 3:4].astype(np.uint32)
    return ((rgb * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255).astype(np.uint8)


def _check_size(path, width: int, height: int, *, channels: int, bytes_per_sample: int, limits: tuple[int, int]) -> None:
    """Refuse, from the header alone, an image whose pixels or decoded bytes exceed the limits."""
    max_pixels, max_decode_bytes = limits
    if width <= 0 or height <= 0:
        raise DecodeError(path, f"invalid image size {width}x{height}", kind=ErrorKind.CORRUPT)
    if width * height > max_pixels:
        raise DecodeError(
            path, f"{width}x{height} pixels exceeds the limit of {max_pixels} (possible decompression bomb)",
            kind=ErrorKind.TOO_LARGE,
        )
    decoded = width * height * channels * bytes_per_sample
    if decoded > max_decode_bytes:
        raise DecodeError(
            path, f"{width}x{height} pixels x {channels} channels x {bytes_per_sample} bytes = {decoded} bytes "
                  f"decoded exceeds the limit of {max_decode_bytes} (--max-decode-bytes)", kind=ErrorKind.TOO_LARGE,
        )


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded image upright per EXIF orientation 1-8 (as Pillow's exif_transpose does)."""
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation == 5:
        image = image.transpose(1, 0, 2)
    elif orientation == 6:
        image = np.rot90(image, k=-1)
    elif orientation == 7:
        image = np.rot90(image, k=1)[:, ::-1]
    elif orientation == 8:
        image = np.rot90(image, k=1)
    else:
        return image
    return np.ascontiguousarray(image)


def jpeg_exif_orientation(data: bytes) -> int:
    """The EXIF Orientation tag (1-8) from a JPEG's APP1 segment; 1 when absent or unreadable."""
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no metadata after this
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            return _tiff_orientation(segment[6:])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack(order + "I", tiff[4:8])[0]
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, kind, _, value = struct.unpack(order + "HHI4s", entry)
            if tag == 0x0112 and kind == 3:  # Orientation, SHORT
                orientation = struct.unpack(order + "H", value[:2])[0]
                return orientation if 1 <= orientation <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1
