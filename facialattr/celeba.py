"""CelebA's label files in their native layout: names, parsers and partition codes.

The one parser of ``list_attr_celeba.txt`` and of the ``file integer`` tables
(``list_eval_partition.txt``, ``identity_CelebA.txt``), shared by training
(training/data.py) and the client's top-10 report, which must not import training.
Anything inconsistent is a :class:`DatasetError` naming file and line, because a
silently misaligned label table trains a model that looks fine and is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import DatasetError

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_DIR = "img_align_celeba"
PARTITIONS = {"train": 0, "val": 1, "test": 2}

__all__ = ["ATTR_FILE", "IDENTITY_FILE", "IMAGE_DIR", "PARTITIONS", "PARTITION_FILE", "read_attributes", "read_mapping"]


def read_attributes(path: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` into (attribute names, file names, 0/1 uint8 labels [N, 40]).

    CelebA's -1/1 become 0/1. Raises :class:`DatasetError` naming the file (and line) when it
    is missing or unreadable, the header is not the 40 CelebA names in CelebA order, a row
    is malformed, the declared count is wrong, or a file is listed twice.
    """
    lines = _read_lines(path)
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a header line, found {len(lines)} lines")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise DatasetError(f"{path}:1: first line must be the image count, got {lines[0].strip()[:40]!r}") from None
    names = tuple(lines[1].split())
    if names != CELEBA_ATTRIBUTES:
        raise DatasetError(f"{path}:2: header is not the 40 CelebA attribute names in CelebA order")
    files: list[str] = []
    rows: list[list[int]] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise DatasetError(f"{path}:{number}: expected a file name and {len(names)} values of -1/1, got {line.strip()[:80]!r}")
        files.append(fields[0])
        rows.append([1 if v == "1" else 0 for v in fields[1:]])
    if declared != len(files):
        raise DatasetError(f"{path}:1: declares {declared} images but lists {len(files)}")
    if len(set(files)) != len(files):
        raise DatasetError(f"{path}: lists some image twice")
    return names, files, np.asarray(rows, dtype=np.uint8).reshape(len(files), len(names))


def read_mapping(path: Path, *, valid: set[int] | None = None) -> dict[str, int]:
    """Parse a ``file integer`` table (partitions, identities) into {file name: integer}.

    Raises :class:`DatasetError` naming the file and line for a malformed row or, when
    ``valid`` is given, a value outside it; and naming the file when it is missing or unreadable.
    """
    mapping: dict[str, int] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{number}: expected 'file integer', got {line.strip()[:80]!r}")
        value = int(fields[1])
        if valid is not None and value not in valid:
            raise DatasetError(f"{path}:{number}: value {value} is not one of {sorted(valid)}")
        mapping[fields[0]] = value
    return mapping


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
