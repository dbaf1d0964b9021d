"""The labelled CelebA validation split, read from a dataset folder in the official layout.

``DIR/list_eval_partition.txt`` (0 train, 1 val, 2 test), ``DIR/list_attr_celeba.txt``
(-1/1, mapped to 0/1 here) and the images under ``DIR/img_align_celeba/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr.errors import DatasetError

VAL_PARTITION = 1


@dataclass(frozen=True)
class LabelledSplit:
    files: tuple[Path, ...]
    labels: np.ndarray  # [N, num_attributes] uint8 in {0, 1}
    attribute_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def slice(self, start: int, stop: int | None = None) -> LabelledSplit:
        return LabelledSplit(self.files[start:stop], self.labels[start:stop], self.attribute_names)


def _required(root: Path, name: str) -> Path:
    path = root / name
    if not path.exists():
        raise DatasetError(f"{root}: not a CelebA folder, {name} is missing")
    return path


def load_split(root: Path, *, partition: int = VAL_PARTITION, limit: int | None = None) -> LabelledSplit:
    """Files and 0/1 labels of one partition, in file-name order, at most ``limit`` of them."""
    root = Path(root)
    images = _required(root, "img_align_celeba")
    partitions = _required(root, "list_eval_partition.txt")
    attributes = _required(root, "list_attr_celeba.txt")
    wanted = []
    for number, line in enumerate(partitions.read_text().splitlines(), 1):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise DatasetError(f"{partitions}:{number}: expected 'FILE PARTITION', got {line!r}")
        if int(fields[1]) == partition:
            wanted.append(fields[0])
    wanted = sorted(wanted)[:limit]
    lines = attributes.read_text().splitlines()
    names = tuple(lines[1].split())
    rows = {}
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if len(fields) != len(names) + 1 or any(v not in ("-1", "1") for v in fields[1:]):
            raise DatasetError(f"{attributes}:{number}: expected a file name and {len(names)} values of -1/1")
        rows[fields[0]] = fields[1:]
    missing = [f for f in wanted if f not in rows]
    if missing:
        raise DatasetError(f"{attributes}: no labels for {len(missing)} files of partition {partition}, e.g. {missing[0]}")
    if not wanted:
        raise DatasetError(f"{partitions}: partition {partition} is empty")
    labels = (np.array([rows[f] for f in wanted], dtype=np.int8) > 0).astype(np.uint8)
    return LabelledSplit(tuple(images / f for f in wanted), labels, names)
