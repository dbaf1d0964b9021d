"""CelebA in its native layout: attribute table, partitions, identities, image paths.

Reads ``list_attr_celeba.txt`` / ``list_eval_partition.txt`` / ``identity_CelebA.txt``
and ``img_align_celeba/`` from any directory, maps CelebA's -1/1 labels to 0/1 and
refuses anything inconsistent with a :class:`DatasetError` naming file and line,
because a silently misaligned label table trains a model that looks fine and is not.
No TensorFlow here: the analysis and the metrics read labels without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import DatasetError

log = logging.getLogger(__name__)

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_DIR = "img_align_celeba"
PARTITIONS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Split:
    """One partition: image paths, 0/1 labels [N, 40] and identity ids (-1 when unknown)."""

    name: str
    paths: tuple[Path, ...]
    labels: np.ndarray
    identities: np.ndarray
    attribute_names: tuple[str, ...] = CELEBA_ATTRIBUTES

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def priors(self) -> np.ndarray:
        return self.labels.mean(axis=0) if len(self) else np.full(self.labels.shape[1], 0.5)

    def subset(self, indices: np.ndarray, name: str | None = None) -> Split:
        return Split(name or self.name, tuple(self.paths[i] for i in indices), self.labels[indices],
                     self.identities[indices], self.attribute_names)


def read_attributes(path: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` into (names, files, 0/1 uint8 labels)."""
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
    """Parse a ``file integer`` table (partitions, identities)."""
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


def load_celeba(data_dir: Path | str, *, check_images: bool = True) -> dict[str, Split]:
    """All partitions present in ``data_dir`` (keys among train/val/test)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: data directory does not exist")
    names, files, labels = read_attributes(root / ATTR_FILE)
    partitions = read_mapping(root / PARTITION_FILE, valid=set(PARTITIONS.values()))
    identity_path = root / IDENTITY_FILE
    identities = read_mapping(identity_path) if identity_path.exists() else {}
    unlisted = [f for f in files if f not in partitions]
    if unlisted:
        raise DatasetError(f"{root / PARTITION_FILE}: no partition for {len(unlisted)} images, e.g. {unlisted[0]}")
    image_dir = root / IMAGE_DIR
    if check_images:
        _check_images(image_dir, files)
    part_of = np.array([partitions[f] for f in files])
    ids = np.array([identities.get(f, -1) for f in files], dtype=np.int64)
    splits = {}
    for name, code in PARTITIONS.items():
        idx = np.flatnonzero(part_of == code)
        if len(idx):
            splits[name] = Split(name, tuple(image_dir / files[i] for i in idx), labels[idx], ids[idx], names)
    log.info("CelebA at %s: %s", root, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits


def require_splits(splits: dict[str, Split], *names: str) -> list[Split]:
    missing = [n for n in names if n not in splits]
    if missing:
        raise DatasetError(f"data set has no {' / '.join(missing)} partition")
    return [splits[n] for n in names]


def _check_images(image_dir: Path, files: list[str]) -> None:
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder is missing")
    present = {p.name for p in image_dir.iterdir()}
    missing = [f for f in files if f not in present]
    if missing:
        raise DatasetError(f"{image_dir}: {len(missing)} listed images are missing, e.g. {missing[0]}")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
