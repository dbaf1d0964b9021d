"""Walking inputs: lazy, sorted, deduplicated, and never escaping the given folders through links."""

from __future__ import annotations

import os
import pickle

from facialattr.client.batching import EngineConfig, EngineTimings, RequestGroup, decode_files
from facialattr.client.paths import WalkStats, iter_inputs
from facialattr.client.rows import make_row
from facialattr.contract import ModelContract
from facialattr.decoding import DecodeError
from facialattr.errors import ErrorKind


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_yield_images_sorted_and_recursion_is_opt_in(tmp_path):
    for name in ("b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "sub/c.jpeg"):
        _touch(tmp_path / name)
    assert [os.path.basename(p) for p in iter_inputs([tmp_path])] == ["a.PNG", "b.jpg"]
    assert [os.path.basename(p) for p in iter_inputs([tmp_path], recursive=True)] == ["a.PNG", "b.jpg", "c.jpeg"]


def test_explicit_files_are_kept_even_when_missing_or_oddly_named(tmp_path):
    odd = _touch(tmp_path / "photo.data")
    missing = tmp_path / "gone.jpg"
    assert [i.path for i in iter_inputs([odd, missing])] == [str(odd), str(missing)]


def test_each_file_is_yielded_once_even_when_named_twice(tmp_path):
    _touch(tmp_path / "a.jpg")
    stats = WalkStats()
    assert len(list(iter_inputs([tmp_path, tmp_path / "a.jpg", tmp_path], stats=stats))) == 1
    assert stats.skipped_duplicates == 2


def test_symlinks_outside_the_roots_are_followed_only_when_asked(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(root / "in.jpg")
    _touch(outside / "secret.jpg")
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "inner.jpg").symlink_to(root / "in.jpg")
    stats = WalkStats()
    walked = list(iter_inputs([root], recursive=True, stats=stats))
    assert [os.path.basename(p) for p in walked] == ["in.jpg", "inner.jpg", "link.jpg", "linkdir"]
    refused = [p for p in walked if p.refused]
    assert [os.path.basename(p) for p in refused] == ["link.jpg", "linkdir"] and stats.skipped_symlinks == 2
    assert all(p.refused.kind == "outside_roots" and "--follow-symlinks" in p.refused.reason for p in refused)
    followed = [os.path.basename(p) for p in iter_inputs([root], recursive=True, follow_symlinks=True)]
    assert followed == ["in.jpg", "inner.jpg", "link.jpg", "secret.jpg"]


def test_directory_cycles_are_cut(tmp_path):
    _touch(tmp_path / "a" / "x.jpg")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    assert [os.path.basename(p) for p in iter_inputs([tmp_path], recursive=True)] == ["x.jpg"]


def test_the_walk_is_lazy(tmp_path):
    for i in range(3):
        _touch(tmp_path / f"d{i}" / "x.jpg")
    walk = iter_inputs([tmp_path], recursive=True)
    first = next(walk)
    (tmp_path / "d2" / "late.jpg").write_bytes(b"x")  # appears after the walk started, before d2 is listed
    assert os.path.basename(first) == "x.jpg" and "late.jpg" in [os.path.basename(p) for p in walk]


def _make_deep_folder(root, component: str = "d" * 250) -> str:
    """Nested folders whose full path exceeds PATH_MAX (made with dir_fd, as no path can name them)."""
    depth = os.pathconf("/", "PC_PATH_MAX") // (len(component) + 1) + 1
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(component, dir_fd=fd)
            child = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return os.path.join(str(root), *[component] * depth)


def test_a_folder_that_cannot_be_listed_becomes_a_refused_path(tmp_path):
    _touch(tmp_path / "b.jpg")
    deep = _make_deep_folder(tmp_path)
    walked = list(iter_inputs([tmp_path], recursive=True))
    refused = [p for p in walked if p.refused]
    assert [os.path.basename(p) for p in walked if p not in refused] == ["b.jpg"]
    (only,) = refused
    assert deep.startswith(only.path) and len(only.path) > os.pathconf("/", "PC_PATH_MAX")
    assert only.refused.kind == "unreadable" and "too long" in only.refused.reason


def test_a_refused_input_keeps_the_walks_error_unchanged_up_to_its_row(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(outside / "secret.jpg")
    root.mkdir()
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (item,) = iter_inputs([root])
    error = item.refused
    assert isinstance(error, DecodeError) and (error.path, error.kind) == (item.path, ErrorKind.OUTSIDE_ROOTS)
    (decoded,), _ = decode_files([item], ModelContract().preprocessing, EngineConfig().decode_limits())
    assert decoded[0] is None and decoded[1] is error  # passed on, not rebuilt
    group = RequestGroup()
    group.add(item.path, *decoded)
    (result,) = group.results(EngineTimings())
    assert (result.path, result.error_kind, result.error, result.retryable) == (item.path, error.kind, str(error), False)
    row = make_row(result, ModelContract())
    assert (row["status"], row["error_kind"], row["error"]) == (
        "error", "outside_roots", f"{item.path}: symbolic link leads outside the given folders; not followed "
                                  "(--follow-symlinks to include it)")


def test_a_refused_input_pickles_with_its_error(tmp_path):
    """An Input may go to another process (a process pool, a Ray task): its error comes back whole."""
    _touch(tmp_path / "outside" / "secret.jpg")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    (item,) = iter_inputs([tmp_path / "root"])
    copy = pickle.loads(pickle.dumps(item))
    assert (copy.path, str(copy.refused), copy.refused.reason, copy.refused.kind) == (
        item.path, str(item.refused), item.refused.reason, ErrorKind.OUTSIDE_ROOTS)


def test_a_folder_larger_than_the_sorting_limit_is_streamed_whole(tmp_path, monkeypatch):
    from facialattr.client import paths

    for i in range(7):
        _touch(tmp_path / f"{i}.jpg")
    monkeypatch.setattr(paths, "SORTED_LISTING_LIMIT", 3)
    assert sorted(os.path.basename(p) for p in iter_inputs([tmp_path])) == [f"{i}.jpg" for i in range(7)]


def test_a_folder_of_exactly_the_sorting_limit_is_still_listed_in_name_order(tmp_path, monkeypatch):
    from facialattr.client import paths

    names = [f"{i:03d}.jpg" for i in range(50)]  # 50 names: directory order is not name order by chance
    for name in reversed(names):
        _touch(tmp_path / name)
    monkeypatch.setattr(paths, "SORTED_LISTING_LIMIT", 50)
    assert [os.path.basename(p) for p in iter_inputs([tmp_path])] == names


def test_a_folder_without_images_is_reported_as_empty(tmp_path):
    _touch(tmp_path / "empty" / "notes.txt")
    _touch(tmp_path / "full" / "a.jpg")
    stats = WalkStats()
    assert [os.path.basename(p) for p in iter_inputs([tmp_path / "empty", tmp_path / "full"], stats=stats)] == ["a.jpg"]
    assert stats.empty_roots == [str(tmp_path / "empty")]
