"""A name swapped after its folder was listed is not read: the walk's rule holds when the file is opened, too.

Each case lists a folder as ``facialattr score`` does, then (the attacker's move, between
listing and reading) replaces one listed name, then scores the listed inputs on the real
server. The swapped name must become an error row of kind ``changed``; the untouched
file beside it is still scored.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facialattr.client.batching import EngineConfig, decode_files, score_files
from facialattr.client.paths import iter_inputs
from facialattr.client.scorer import Scorer


def _file_to_outside_link(root: Path, outside: Path) -> Path:
    (root / "face.jpg").unlink()
    (root / "face.jpg").symlink_to(outside / "secret.jpg")
    return root / "face.jpg"


def _file_to_inside_link(root: Path, outside: Path) -> Path:
    (root / "face.jpg").unlink()
    (root / "face.jpg").symlink_to(root / "control.jpg")
    return root / "face.jpg"


def _file_renamed_over(root: Path, outside: Path) -> Path:
    shutil.copy(outside / "secret.jpg", root / "incoming.tmp")
    os.replace(root / "incoming.tmp", root / "face.jpg")
    return root / "face.jpg"


def _subfolder_to_outside_link(root: Path, outside: Path) -> Path:
    """The folder above the file swapped: the name is still a plain file, in another folder."""
    os.rename(root / "sub", root / "sub.old")
    (root / "sub").symlink_to(outside)
    return root / "sub" / "secret.jpg"


def _followed_link_repointed_outside(root: Path, outside: Path) -> Path:
    (root / "alias.jpg").unlink()
    (root / "alias.jpg").symlink_to(outside / "secret.jpg")
    return root / "alias.jpg"


SWAPS = [_file_to_outside_link, _file_to_inside_link, _file_renamed_over, _subfolder_to_outside_link,
         _followed_link_repointed_outside]


@pytest.fixture
def folders(tmp_path, make_jpegs):
    """A scored folder (control.jpg, face.jpg, sub/secret.jpg, alias.jpg -> control.jpg) and a private one outside it."""
    root, outside = tmp_path / "scored", tmp_path / "private"
    make_jpegs(root, 2)
    os.rename(root / "img00000.jpg", root / "control.jpg")
    os.rename(root / "img00001.jpg", root / "face.jpg")
    make_jpegs(root / "sub", 1, seed=1)
    os.rename(root / "sub" / "img00000.jpg", root / "sub" / "secret.jpg")
    make_jpegs(outside, 1, seed=2)
    os.rename(outside / "img00000.jpg", outside / "secret.jpg")
    (root / "alias.jpg").symlink_to(root / "control.jpg")  # inside the folder: the walk follows it
    return root, outside


@pytest.mark.parametrize("swap", SWAPS, ids=lambda f: f.__name__.strip("_").replace("_", " "))
def test_a_name_swapped_after_listing_is_an_error_row_and_the_rest_is_scored(folders, swap, grpc_url):
    root, outside = folders
    listed = list(iter_inputs([root], recursive=True))
    swapped = swap(root, outside)
    with Scorer(grpc_url) as scorer:
        results = {Path(r.path): r for r in score_files(listed, scorer)}
    assert results[swapped].error_kind == "changed" and results[swapped].probabilities is None, results[swapped]
    assert str(swapped) in results[swapped].error
    assert results[root / "control.jpg"].ok
    assert sorted(results) == sorted(Path(i.path) for i in listed)


def test_without_a_swap_every_listed_file_is_scored_including_the_followed_link(folders, grpc_url):
    root, _ = folders
    with Scorer(grpc_url) as scorer:
        results = list(score_files(iter_inputs([root], recursive=True), scorer))
    assert [os.path.relpath(r.path, root) for r in results if r.ok] == ["alias.jpg", "control.jpg", "face.jpg",
                                                                        "sub/secret.jpg"]


def test_the_ray_engines_units_keep_the_listing_so_its_tasks_refuse_a_swap_too(folders):
    from facialattr.client import sharded_out
    from facialattr.contract import Preprocessing

    root, outside = folders
    out = sharded_out.open_dataset(root.parent / "shards", resume=False, overwrite=False)
    plan = sharded_out.plan_units(out, [root], recursive=True, follow_symlinks=False, unit_size=100)
    swapped = _file_to_outside_link(root, outside)
    items = sharded_out.read_unit(out, 0)
    assert plan.units == 1 and all(i.listed is not None and i.listed.device is None for i in items)
    decoded, _ = decode_files(items, Preprocessing(size_hw=(64, 64)), EngineConfig().decode_limits())
    errors = {Path(i.path): error for i, (_, error) in zip(items, decoded, strict=True)}
    assert errors[swapped].kind == "changed"
    assert errors[root / "control.jpg"] is None
