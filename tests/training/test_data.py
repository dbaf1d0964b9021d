"""The CelebA loader: label mapping, partitions, and the errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import DatasetError
from facialattr.training.data import load_celeba, read_attributes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, celeba_factory) -> Path:
    return celeba_factory(tmp_path_factory.mktemp("celeba"), n_train=6, n_val=4)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_minus_one_and_one_map_to_zero_and_one(tmp_path):
    row = ["1" if i % 3 == 0 else "-1" for i in range(40)]
    (tmp_path / "list_attr_celeba.txt").write_text("1\n" + " ".join(CELEBA_ATTRIBUTES) + "\nx.jpg " + " ".join(row) + "\n")
    names, files, labels = read_attributes(tmp_path / "list_attr_celeba.txt")
    assert files == ["x.jpg"] and names == CELEBA_ATTRIBUTES
    assert labels.tolist() == [[1 if i % 3 == 0 else 0 for i in range(40)]]


def test_partitions_identities_and_paths_line_up(tiny):
    splits = load_celeba(tiny)
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "val": 4}
    assert splits["val"].paths[0].name == "000007.jpg" and splits["val"].paths[0].exists()
    assert splits["train"].identities.tolist() == [1, 1, 2, 2, 3, 3]
    assert splits["train"].labels.shape == (6, 40) and splits["train"].labels.dtype == np.uint8


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[:4] + [lines[4].replace(" -1", " 0", 1)] + lines[5:], "list_attr_celeba.txt:5"),
    (lambda lines: lines[:3] + [lines[3].rsplit(" ", 1)[0]] + lines[4:], "list_attr_celeba.txt:4"),
    (lambda lines: ["11"] + lines[1:], "declares 11 images but lists 10"),
    (lambda lines: [lines[0], "Bald " + lines[1]] + lines[2:], "list_attr_celeba.txt:2"),
])
def test_malformed_attribute_rows_name_file_and_line(tiny, tmp_path, edit, message):
    root = _copy(tiny, tmp_path / "d")
    path = root / "list_attr_celeba.txt"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_celeba(root)


def test_missing_image_is_named(tiny, tmp_path):
    root = _copy(tiny, tmp_path / "d")
    (root / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DatasetError, match="000003.jpg"):
        load_celeba(root)


def test_missing_partition_file_and_bad_partition_value_are_named(tiny, tmp_path):
    root = _copy(tiny, tmp_path / "d")
    part = root / "list_eval_partition.txt"
    part.write_text(part.read_text().replace("000002.jpg 0", "000002.jpg 7"))
    with pytest.raises(DatasetError, match="list_eval_partition.txt:2"):
        load_celeba(root)
    part.unlink()
    with pytest.raises(DatasetError, match="list_eval_partition.txt: file is missing"):
        load_celeba(root)
