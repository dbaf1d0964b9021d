"""CelebA in its native layout: attribute table, partitions, identities, image paths.

Reads ``list_attr_celeba.txt`` / ``list_eval_partition.txt`` / ``identity_CelebA.txt``
(with the core's parsers, facialattr/celeba.py) and ``img_align_celeba/`` from any
directory into splits, and refuses anything inconsistent with a :class:`DatasetError`
naming file and line.
No TensorFlow here: the analysis and the metrics read labels without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The file names and parsers live in the core so the client can read labels without training.
from facialattr.celeba import (
    ATTR_FILE,
    IDENTITY_FILE,
    IMAGE_DIR,
    PARTITION_FILE,
    PARTITIONS,
    read_attributes,
    read_mapping,
)
from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import DatasetError

__all__ = ["ATTR_FILE", "IDENTITY_FILE", "IMAGE_DIR", "PARTITIONS", "PARTITION_FILE", "Split", "load_celeba",
           "read_attributes", "read_mapping", "require_splits"]

log = logging.getLogger(__name__)


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
        """Each attribute's share of positive labels, float [40]; 0.5 each for an empty split."""
        return self.labels.mean(axis=0) if len(self) else np.full(self.labels.shape[1], 0.5)

    def subset(self, indices: np.ndarray, name: str | None = None) -> Split:
        """The rows at ``indices`` (in that order) as a new split, named ``name`` or this split's name."""
        return Split(name or self.name, tuple(self.paths[i] for i in indices), self.labels[indices],
                     self.identities[indices], self.attribute_names)


def load_celeba(data_dir: Path | str, *, check_images: bool = True) -> dict[str, Split]:
    """All partitions present in ``data_dir`` (keys among train/val/test).

    Identities are -1 when ``identity_CelebA.txt`` is absent. Raises :class:`DatasetError`
    when the folder or a label file is missing or inconsistent, an image has no partition,
    or (``check_images``) a listed image is missing from ``img_align_celeba/``.
    """
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
    """The splits named ``names``, in that order; :class:`DatasetError` naming any that is absent."""
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
