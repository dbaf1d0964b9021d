"""Output files: 0600/0700 whatever the umask, never through a planted link, reopened only when ours, one run each."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facialattr.errors import OutputBusyError, OutputError
from facialattr.files import (
    SHARED_FILE_MODE,
    OutputLock,
    atomic_file,
    create_private,
    lock_path_for,
    make_private_dirs,
    open_append,
    open_own,
    remove_stale_temporaries,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_new_files_are_0600_unless_asked_to_be_shared_and_new_folders_0700_whatever_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        folder = make_private_dirs(tmp_path / "a" / "b")
        os.close(create_private(folder / "created"))
        with atomic_file(folder / "atomic") as f:
            f.write(b"x")
        with atomic_file(folder / "shared", mode=SHARED_FILE_MODE, text=True) as f:
            f.write("read by the server's user")
        os.close(open_append(folder / "appended"))
    finally:
        os.umask(previous)
    assert [_mode(tmp_path / "a"), _mode(folder)] == [0o700, 0o700]
    assert {name: _mode(folder / name) for name in ("created", "atomic", "appended", "shared")} == {
        "created": 0o600, "atomic": 0o600, "appended": 0o600, "shared": 0o644}
    assert sorted(p.name for p in folder.iterdir()) == ["appended", "atomic", "created", "shared"]  # no temporary left


def _create(path: Path) -> None:
    os.close(create_private(path))


def _atomic(path: Path) -> None:
    with atomic_file(path) as f:
        f.write(b"written")


def _append(path: Path) -> None:
    os.write(open_append(path), b"appended")


def _reopen(path: Path) -> None:
    os.ftruncate(open_own(path, os.O_RDWR), 0)


def _lock(path: Path) -> None:
    OutputLock(path).acquire()


def _folder(path: Path) -> None:
    make_private_dirs(path)


WRITERS = [_create, _atomic, _append, _reopen, _lock, _folder]


@pytest.mark.parametrize("target_exists", [True, False], ids=["link to a file", "dangling link"])
@pytest.mark.parametrize("write", WRITERS, ids=lambda f: f.__name__.lstrip("_"))
def test_a_link_planted_at_the_name_is_refused_and_its_target_neither_made_nor_changed(tmp_path, write, target_exists):
    victim = tmp_path / "victim"
    if target_exists:
        victim.write_bytes(b"header\nrow\ntorn")  # a truncation or an append would show
        os.utime(victim, ns=(1_000_000_000, 1_000_000_000))
    planted = tmp_path / "shared" / "out.csv"
    planted.parent.mkdir()
    planted.symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        write(planted)
    if target_exists:
        assert victim.read_bytes() == b"header\nrow\ntorn" and victim.stat().st_mtime_ns == 1_000_000_000
    else:
        assert not victim.exists()
    assert os.listdir(planted.parent) == ["out.csv"]  # nothing else written beside it (no lock, no temporary)


def _hard_link(path: Path) -> None:
    path.write_bytes(b"data")
    os.link(path, path.with_name("second-name"))


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _other_users(path: Path) -> None:
    path.write_bytes(b"data")
    os.chown(path, 65534, 65534)


@pytest.mark.parametrize(("make", "refusal"), [
    (_hard_link, "2 names"),
    (_fifo, "not a regular file"),
    pytest.param(_other_users, "another user", marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")),
], ids=["hard link", "FIFO", "another user's file"])
def test_an_existing_output_is_reopened_only_when_it_is_this_users_regular_file_with_one_name(tmp_path, make, refusal):
    path = tmp_path / "out.csv"
    make(path)
    before = os.lstat(path)
    for flags in (os.O_RDWR | os.O_APPEND, os.O_RDONLY):
        with pytest.raises(OutputError, match=refusal):
            open_own(path, flags)
    with pytest.raises(OutputError, match=refusal):
        open_append(path)
    after = os.lstat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_character_device_is_appended_to_only_when_asked(tmp_path):
    with pytest.raises(OutputError, match="not a regular file"):
        open_append("/dev/null")
    os.close(open_append("/dev/null", devices_ok=True))


def test_an_atomic_file_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "shard.parquet"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write(b"half of the new")
        raise RuntimeError
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["shard.parquet"]


def test_stale_temporaries_of_this_user_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "r.csv"
    names = [".r.csv.abc123.tmp", ".r.csv.journal.jsonl", "r.csv", ".other.csv.x.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".r.csv.link.tmp").symlink_to(tmp_path / "r.csv")
    remove_stale_temporaries(out)
    assert sorted(os.listdir(tmp_path)) == sorted([*names[1:], ".r.csv.link.tmp"])


HOLD_LOCK = """
import sys, time
from facialattr.files import OutputLock
OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _holder(out: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_lock_fails_at_once_naming_the_output_and_the_holder_then_a_killed_holder_leaves_none(tmp_path):
    out = tmp_path / "r.csv"
    holder = _holder(out)
    try:
        started = time.monotonic()
        with pytest.raises(OutputBusyError) as caught:
            OutputLock(out).acquire()
        assert time.monotonic() - started < 1.0
        assert str(out) in str(caught.value) and f"pid {holder.pid}" in str(caught.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path_for(out).exists()  # a killed run leaves the file, not the lock
    with OutputLock(out):
        assert lock_path_for(out).read_text() == f"{os.getpid()}\n"
    assert not lock_path_for(out).exists()  # a run that ends removes it


def test_a_lock_file_removed_by_its_last_holder_is_not_locked_as_an_orphan(tmp_path, monkeypatch):
    """A run that opened the lock file just before its holder removed it must lock the new file, not the old one."""
    from facialattr import files

    out = tmp_path / "r.csv"
    first = OutputLock(out).acquire()
    opened_before_release = os.open(lock_path_for(out), os.O_RDWR)
    first.release()
    real_open = files._open_or_create
    handed = []

    def open_the_old_file_first(path, flags, **kwargs):
        if not handed:  # the interleaving: this run's open happened before the holder's unlink
            handed.append(opened_before_release)
            return opened_before_release
        return real_open(path, flags, **kwargs)

    monkeypatch.setattr(files, "_open_or_create", open_the_old_file_first)
    second = OutputLock(out).acquire()
    try:
        assert handed and lock_path_for(out).read_text() == f"{os.getpid()}\n"
        monkeypatch.setattr(files, "_open_or_create", real_open)
        with pytest.raises(OutputBusyError):  # the live file is locked, so a third run is refused
            OutputLock(out).acquire()
    finally:
        second.release()
