"""Image files to uint8 RGB arrays: the client's file step in front of the core decoder.

Decoding itself (simplejpeg for JPEG, Pillow for the rest, EXIF orientation, the size
limits) lives in :mod:`facialattr.decoding`, which the served bytes model calls too;
this module reads files safely (regular files only, bounded, still the file a folder
walk listed) and re-exports the core's decode API for the client's callers.

Every failure is a :class:`DecodeError` (an ``InputError``) that names the file
and carries its :class:`~facialattr.errors.ErrorKind` for summaries.
"""

from __future__ import annotations

import errno
import os
import stat

import numpy as np

from facialattr.client.paths import Input
from facialattr.decoding import (  # noqa: F401  (re-exported: the client's decode API predates the core module)
    ALPHA_BACKGROUND,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodeError,
    apply_orientation,
    decode_and_prepare,
    decode_bytes,
    jpeg_exif_orientation,
    to_rgb8,
)
from facialattr.errors import ErrorKind


def decode_image(
    path: os.PathLike | str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """Read and decode an image file to a uint8 RGB array [H, W, 3], EXIF orientation applied.

    Raises :class:`DecodeError` (kind ``too_large``) for a file over ``max_file_bytes`` before
    reading it, and for an image over ``max_pixels`` or ``max_decode_bytes`` before decoding it.
    """
    data = read_file(path, max_file_bytes=max_file_bytes)
    return decode_bytes(data, path=path, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


def read_file(path: os.PathLike | str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes; :class:`DecodeError` for anything else, and for a file over ``max_file_bytes``.

    An :class:`~facialattr.client.paths.Input` that a folder walk listed is read only if it is
    still the file listed (kind ``changed`` otherwise): opened without following a link unless
    the walk followed one there, then compared (device and inode) with what the walk saw.
    """
    listed = path.listed if isinstance(path, Input) else None
    no_follow = os.O_NOFOLLOW if listed is not None and not listed.via_link else 0
    try:
        # O_NONBLOCK: opening a FIFO named x.jpg must not wait forever for a writer;
        # it has no effect on regular files. Then only regular files are read (no
        # FIFO, device such as /dev/zero, or socket).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | no_follow)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if listed is not None and not listed.same_file(st):
                raise DecodeError(path, "is not the file its folder listed (replaced since, or a folder above it was); "
                                        "not read", kind=ErrorKind.CHANGED)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(st.st_mode):
                raise DecodeError(path, "not a regular file (FIFO, device or socket)", kind=ErrorKind.NOT_A_FILE)
            if st.st_size > max_file_bytes:
                raise DecodeError(path, f"file of {st.st_size} bytes exceeds the limit of {max_file_bytes} "
                                        "(--max-file-bytes)", kind=ErrorKind.TOO_LARGE)
            data = f.read(max_file_bytes + 1)  # a file growing while read is still bounded
            if len(data) > max_file_bytes:
                raise DecodeError(path, f"file grew past the limit of {max_file_bytes} bytes while read",
                                  kind=ErrorKind.TOO_LARGE)
    except FileNotFoundError:
        raise DecodeError(path, "no such file", kind=ErrorKind.NOT_FOUND) from None
    except IsADirectoryError:
        raise DecodeError(path, "is a directory", kind=ErrorKind.NOT_A_FILE) from None
    except PermissionError:
        raise DecodeError(path, "permission denied", kind=ErrorKind.UNREADABLE) from None
    except OSError as exc:
        if no_follow and exc.errno == errno.ELOOP:
            raise DecodeError(path, "became a symbolic link after its folder was listed; not followed",
                              kind=ErrorKind.CHANGED) from None
        raise DecodeError(path, f"cannot read: {exc.strerror or exc}", kind=ErrorKind.UNREADABLE) from None
    if not data:
        raise DecodeError(path, "empty file", kind=ErrorKind.EMPTY)
    return data


