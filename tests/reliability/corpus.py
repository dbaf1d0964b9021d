"""A corpus of bad and awkward inputs, made on disk by the tests: one row per kind of trouble.

``TABLE`` is the contract: each row names a kind of input, the file the scorer
meets, whether scoring must succeed (``ok``) or give an error row (``error``,
with a substring the reason must contain), and a maker that writes the file.
``build(root, outside=...)`` writes every row and returns, per row, the upright
8-bit RGB pixels an ``ok`` file holds, so a test can check the score is the
*correct* one, not merely present. Loaded by ``conftest.py`` as ``reliability_corpus``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OK, ERROR = "ok", "error"
PATH_MAX = os.pathconf("/", "PC_PATH_MAX")
_DEEP_COMPONENT = b"d" * 200
_DEEP_DEPTH = PATH_MAX // (len(_DEEP_COMPONENT) + 1) + 1


@dataclass(frozen=True)
class Context:
    root: bytes  # the scored folder
    outside: bytes  # a folder next to it, for links that leave the root
    image: np.ndarray  # the picture most rows carry
    jpeg: bytes  # that picture as a JPEG

    def path(self, name: bytes) -> bytes:
        return os.path.join(self.root, name)


Maker = Callable[[Context, bytes], "np.ndarray | None"]  # writes the file, returns its reference pixels


@dataclass(frozen=True)
class Row:
    kind: str
    name: bytes  # path relative to the root; bytes, because one name is not UTF-8
    status: str
    make: Maker
    reason: str = ""  # for errors: a substring of the reason (case-insensitive)
    tolerance: float = 1e-4  # on probabilities; lossy re-encodings get a little slack
    deleted_after_listing: bool = False

    @property
    def display_name(self) -> str:
        return os.fsdecode(self.name)


def skip_reason(row: Row) -> str:
    """Why a row cannot be exercised on this machine ('' when it can)."""
    if row.kind == "unreadable permissions" and os.geteuid() == 0:
        return "running as root, which reads files whatever their permissions (the FIFO row covers 'cannot open')"
    return ""


# Pictures and encoders


def picture(height: int = 96, width: int = 80, *, seed: int = 0) -> np.ndarray:
    """A smooth, top-to-bottom asymmetric RGB image: any rotation or flip changes its score."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    top, bottom, side = rng.uniform(20, 235, size=(3, 3))
    rgb = [top[c] * (1 - y) + bottom[c] * y + (side[c] - 128) * 0.3 * x for c in range(3)]
    return np.clip(np.rint(np.stack(rgb, axis=-1)), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return buffer.getvalue()


def decode_jpeg_as_tensorflow(data: bytes) -> np.ndarray:
    """JPEG pixels as TensorFlow's default ``decode_jpeg`` makes them (training's view), EXIF ignored.

    libjpeg-turbo with the integer-fast DCT and fancy upsampling; the client's
    tests check this equals TensorFlow bit for bit. Here it is the reference that
    orientation, odd names and links must not change.
    """
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)


def _write(path: bytes, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _saved(data_of: Callable[[Context], bytes], reference_of: Callable[[Context, bytes], np.ndarray | None]) -> Maker:
    def make(ctx: Context, name: bytes) -> np.ndarray | None:
        data = data_of(ctx)
        _write(ctx.path(name), data)
        return reference_of(ctx, data)
    return make


def _bytes_of(data_of: Callable[[Context], bytes]) -> Maker:
    return _saved(data_of, lambda ctx, data: None)


def _pixels(image_of: Callable[[Context], np.ndarray], fmt: str, **options) -> Maker:
    """A lossless file of ``image_of(ctx)``: the reference is that array."""
    return _saved(lambda ctx: encode(image_of(ctx), fmt, **options), lambda ctx, data: image_of(ctx))


def _lossy(data_of: Callable[[Context], bytes]) -> Maker:
    """A JPEG: the reference is what TensorFlow's decoder makes of the same bytes."""
    return _saved(data_of, lambda ctx, data: decode_jpeg_as_tensorflow(data))


def _exif_rotated(ctx: Context) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "turn right to display"; the pixels are stored turned left
    return encode(np.rot90(ctx.image, k=1).copy(), "JPEG", quality=95, exif=exif.tobytes())


def _jpeg_declaring(height: int, width: int) -> Callable[[Context], bytes]:
    """A small JPEG whose frame header declares a huge canvas: a decompression bomb."""
    def data_of(ctx: Context) -> bytes:
        data, pos = ctx.jpeg, 2
        while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
            pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]
    return data_of


def _png_declaring(height: int, width: int) -> bytes:
    """A valid PNG header for a huge grey canvas followed by a few compressed rows."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4)) + chunk(b"IEND", b"")


def _with_alpha(ctx: Context) -> np.ndarray:
    h, w, _ = ctx.image.shape
    alpha = np.linspace(0, 255, w).astype(np.uint8)[None, :, None].repeat(h, axis=0)
    return np.concatenate([ctx.image, alpha], axis=-1)


def _alpha_png(ctx: Context, name: bytes) -> np.ndarray:
    rgba = _with_alpha(ctx)
    _write(ctx.path(name), encode(rgba, "PNG"))
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0  # composited over white
    return np.clip(np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)


def _gray(ctx: Context) -> np.ndarray:
    return ctx.image.mean(axis=2).astype(np.uint8)


def _png16_rgb(ctx: Context, name: bytes) -> np.ndarray:
    import cv2

    ok, data = cv2.imencode(".png", ctx.image[..., ::-1].astype(np.uint16) * 257)
    if not ok:
        raise RuntimeError("OpenCV could not encode a 16-bit PNG")
    _write(ctx.path(name), data.tobytes())
    return ctx.image


def _png16_gray(ctx: Context, name: bytes) -> np.ndarray:
    _write(ctx.path(name), encode(_gray(ctx).astype(np.uint16) * 257, "PNG"))
    return np.repeat(_gray(ctx)[..., None], 3, axis=2)


def _cmyk_jpeg(ctx: Context, name: bytes) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(ctx.image).convert("CMYK").save(buffer, "JPEG", quality=100)
    _write(ctx.path(name), buffer.getvalue())
    return ctx.image


def _animated_gif(ctx: Context, name: bytes) -> np.ndarray:
    from PIL import Image

    frames = [picture(seed=s) // 64 * 64 for s in (2, 3)]  # few colours: GIF's palette keeps them exact
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(os.fsdecode(ctx.path(name)), "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    return frames[0]


# File-system oddities


def _directory(ctx: Context, name: bytes) -> None:
    os.mkdir(ctx.path(name))


def _fifo(ctx: Context, name: bytes) -> None:
    os.mkfifo(ctx.path(name))


def _symlink_to(target: Callable[[Context], bytes], *, leads_to_control: bool = False) -> Maker:
    def make(ctx: Context, name: bytes) -> np.ndarray | None:
        os.symlink(target(ctx), ctx.path(name))
        return decode_jpeg_as_tensorflow(ctx.jpeg) if leads_to_control else None
    return make


def _outside_file(ctx: Context) -> bytes:
    secret = os.path.join(ctx.outside, b"secret.jpg")
    _write(secret, ctx.jpeg)
    return secret


def _unreadable(ctx: Context, name: bytes) -> None:
    _write(ctx.path(name), ctx.jpeg)
    os.chmod(ctx.path(name), 0)


def _deep(ctx: Context, name: bytes) -> None:
    """A file whose full path exceeds PATH_MAX, made one directory at a time (dir_fd)."""
    fd = os.open(ctx.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(_DEEP_DEPTH):
            os.mkdir(_DEEP_COMPONENT, dir_fd=fd)
            child = os.open(_DEEP_COMPONENT, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open(b"deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, ctx.jpeg)
        os.close(out)
    finally:
        os.close(fd)


def _sparse(size_bytes: int) -> Maker:
    """A file of ``size_bytes`` that takes no disk (a hole): reading it whole would take that much memory."""
    def make(ctx: Context, name: bytes) -> None:
        with open(ctx.path(name), "wb") as f:
            f.truncate(size_bytes)
    return make


def write_png16_rgba(path: bytes | str | os.PathLike, width: int, height: int) -> None:
    """A real, fully valid 16-bit RGBA PNG of width x height transparent pixels, a few hundred KB on disk.

    Rows are compressed one at a time, so making a 49-megapixel one takes little memory.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + width * 8)  # filter byte + RGBA x 16 bit
    compressor = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)))
        data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
        f.write(chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _png16_rgba_49_megapixels(ctx: Context, name: bytes) -> None:
    write_png16_rgba(ctx.path(name), 7000, 7000)


def _control(ctx: Context, name: bytes) -> np.ndarray:
    _write(ctx.path(name), ctx.jpeg)
    return decode_jpeg_as_tensorflow(ctx.jpeg)


TABLE: tuple[Row, ...] = (
    Row("plain JPEG (control)", b"control.jpg", OK, _control),
    # Broken or hostile content
    Row("zero-byte file", b"empty.jpg", ERROR, _bytes_of(lambda ctx: b""), "empty"),
    Row("truncated JPEG", b"truncated.jpg", ERROR, _bytes_of(lambda ctx: ctx.jpeg[: len(ctx.jpeg) // 2]), "corrupt"),
    Row("truncated PNG", b"truncated.png", ERROR, _bytes_of(lambda ctx: encode(ctx.image, "PNG")[:300]), "corrupt"),
    Row("random bytes named .jpg", b"random.jpg", ERROR, _bytes_of(lambda ctx: np.random.default_rng(1).bytes(4096)),
        "not an image"),
    Row("text file named .jpg", b"notes.jpg", ERROR, _bytes_of(lambda ctx: b"shopping list: eggs, milk\n" * 20), "not an image"),
    Row("decompression bomb: JPEG declaring 20000x20000", b"bomb.jpg", ERROR, _bytes_of(_jpeg_declaring(20000, 20000)),
        "decompression bomb"),
    Row("decompression bomb: PNG declaring 8000x8000 (below Pillow's own limit)", b"bomb.png", ERROR,
        _bytes_of(lambda ctx: _png_declaring(8000, 8000)), "decompression bomb"),
    # Valid images in unusual clothes: each must score like its plain pixels
    Row("PNG with alpha", b"alpha.png", OK, _alpha_png),
    Row("16-bit RGB PNG", b"deep16.png", OK, _png16_rgb),
    Row("16-bit grayscale PNG", b"gray16.png", OK, _png16_gray),
    Row("grayscale JPEG", b"gray.jpg", OK, _lossy(lambda ctx: encode(_gray(ctx), "JPEG", quality=95))),
    Row("CMYK JPEG", b"cmyk.jpg", OK, _cmyk_jpeg, tolerance=0.02),
    Row("EXIF-rotated JPEG", b"exif_rotated.jpg", OK,
        _saved(_exif_rotated, lambda ctx, data: np.rot90(decode_jpeg_as_tensorflow(data), k=-1))),
    Row("1x1 image", b"one_pixel.png", OK, _pixels(lambda ctx: ctx.image[:1, :1], "PNG")),
    Row("2x1000 image (extreme aspect ratio)", b"sliver.png", OK, _pixels(lambda ctx: picture(2, 1000, seed=4), "PNG")),
    Row("animated GIF (first frame)", b"animated.gif", OK, _animated_gif),
    Row("lossless WebP", b"image.webp", OK, _pixels(lambda ctx: ctx.image, "WEBP", lossless=True)),
    Row("BMP", b"image.bmp", OK, _pixels(lambda ctx: ctx.image, "BMP")),
    Row("TIFF", b"image.tiff", OK, _pixels(lambda ctx: ctx.image, "TIFF")),
    Row("PNG content named .jpg", b"really_png.jpg", OK, _pixels(lambda ctx: ctx.image, "PNG")),
    Row("progressive JPEG, upper-case extension", b"progressive.JPEG", OK,
        _lossy(lambda ctx: encode(ctx.image, "JPEG", progressive=True))),
    Row("JPEG with trailing garbage", b"trailing.jpg", OK, _lossy(lambda ctx: ctx.jpeg + b"\0garbage" * 64)),
    # Names, links and file types that are not plain readable files in the root
    Row("FIFO named .jpg (opening it would block)", b"fifo.jpg", ERROR, _fifo, "not a regular file"),
    Row("unreadable permissions", b"unreadable.jpg", ERROR, _unreadable, "permission denied"),
    Row("broken symlink", b"broken_link.jpg", ERROR, _symlink_to(lambda ctx: b"no-such-target.jpg"), "no such file"),
    Row("symlink loop", b"loop_a.jpg", ERROR, _symlink_to(lambda ctx: b"loop_b.jpg"), "symbolic links"),
    Row("symlink loop, other end", b"loop_b.jpg", ERROR, _symlink_to(lambda ctx: b"loop_a.jpg"), "symbolic links"),
    Row("symlink to a file outside the scored folder", b"outside_link.jpg", ERROR, _symlink_to(_outside_file), "outside"),
    Row("symlink to a file inside the scored folder", b"inside_link.jpg", OK, _symlink_to(lambda ctx: b"control.jpg", leads_to_control=True)),
    Row("non-UTF-8 file name", b"caf\xe9-\xff.jpg", OK, _control),
    Row("file name with a carriage return", b"car\rriage.jpg", OK, _control),
    Row("file name a spreadsheet reads as a formula", b"=HYPERLINK(1).jpg", OK, _control),
    Row("3 GB sparse file named .jpg (read whole, 3 GB of memory)", b"x.jpg", ERROR, _sparse(3 * 2**30),
        "exceeds the limit"),
    Row("16-bit RGBA PNG of 49 megapixels (decodes to 392 MB of samples)", b"deep49mp.png", ERROR,
        _png16_rgba_49_megapixels, "decoded exceeds the limit"),
    Row("255-byte file name", b"n" * 251 + b".jpg", OK, _control),
    Row("path longer than PATH_MAX", b"/".join([_DEEP_COMPONENT] * _DEEP_DEPTH + [b"deep.jpg"]), ERROR, _deep, "too long"),
    Row("file deleted between listing and reading", b"vanishing.jpg", ERROR, _control, "no such file",
        deleted_after_listing=True),
)

# Not a file the scorer meets, but a place it must not stumble: a folder named like an image.
DIRECTORY_NAMED_LIKE_AN_IMAGE = b"folder.jpg"


def build(root: Path, *, outside: Path) -> dict[str, np.ndarray | None]:
    """Write every row under ``root``; returns each row's reference pixels (None for errors), by kind."""
    for folder in (root, outside):
        Path(folder).mkdir(parents=True, exist_ok=True)
    image = picture()
    ctx = Context(os.fsencode(root), os.fsencode(outside), image, encode(image, "JPEG", quality=95))
    _directory(ctx, DIRECTORY_NAMED_LIKE_AN_IMAGE)
    references = {row.kind: row.make(ctx, row.name) for row in TABLE}
    # The folder holds an image too: a recursive walk must find it, a flat one must not list the folder as a file.
    _control(Context(ctx.path(DIRECTORY_NAMED_LIKE_AN_IMAGE), ctx.outside, image, ctx.jpeg), b"inner.jpg")
    return references


def delete_after_listing(root: Path) -> None:
    for row in TABLE:
        if row.deleted_after_listing:
            os.unlink(os.path.join(os.fsencode(root), row.name))
