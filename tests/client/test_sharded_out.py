"""The Ray engine's shard folder on disk: private, never through a planted link, one run at a time (no Ray needed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pyarrow as pa
import pytest

from facialattr.client import sharded_out
from facialattr.client.paths import iter_inputs
from facialattr.errors import ErrorKind, OutputBusyError, OutputError


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_shards_units_and_plan_are_0600_in_0700_folders_under_umask_022(tmp_path, make_jpegs):
    make_jpegs(tmp_path / "in", 3)
    previous = os.umask(0o022)
    try:
        out = sharded_out.open_dataset(tmp_path / "shards", resume=False, overwrite=False)
        sharded_out.plan_units(out, [tmp_path / "in"], recursive=False, follow_symlinks=False, unit_size=2)
        sharded_out.write_shard(out, 0, pa.table({"error_kind": ["", ""]}))
    finally:
        os.umask(previous)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(out).as_posix() for p in files) == [
        "_manifest/plan.json", "_manifest/unit-000000.parquet", "_manifest/unit-000001.parquet", "part-000000.parquet"]
    assert {_mode(p) for p in files} == {0o600}
    assert (_mode(out), _mode(out / sharded_out.MANIFEST_DIR)) == (0o700, 0o700)


def test_a_unit_gives_back_each_refused_input_with_the_error_the_walk_made(tmp_path, make_jpegs):
    make_jpegs(tmp_path / "in", 1)
    (tmp_path / "outside").mkdir()
    (tmp_path / "in" / "link.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    walked = list(iter_inputs([tmp_path / "in"]))
    out = sharded_out.open_dataset(tmp_path / "shards", resume=False, overwrite=False)
    sharded_out.plan_units(out, [tmp_path / "in"], recursive=False, follow_symlinks=False, unit_size=10)
    read = sharded_out.read_unit(out, 0)

    def error(item):
        e = item.refused
        return None if e is None else (type(e), e.path, e.reason, e.kind, str(e))

    assert [(i.path, error(i)) for i in read] == [(i.path, error(i)) for i in walked]
    assert [i.refused.kind for i in read if i.refused] == [ErrorKind.OUTSIDE_ROOTS]


# "inference": a server failure as runs before 0.2 wrote it
@pytest.mark.parametrize(("kinds", "done"), [(["", "corrupt"], 2), (["", "server"], None), (["inference", ""], None)],
                         ids=["final rows", "a server failure", "an old server failure"])
def test_a_unit_is_done_unless_its_shard_holds_a_row_the_server_failed(tmp_path, kinds, done):
    out = sharded_out.open_dataset(tmp_path / "shards", resume=False, overwrite=False)
    assert sharded_out.done_rows(out, 0) is None  # no shard yet
    sharded_out.write_shard(out, 0, pa.table({"error_kind": kinds}))
    assert sharded_out.done_rows(out, 0) == done


@pytest.mark.parametrize(("resume", "overwrite"), [(False, False), (True, False), (False, True)],
                         ids=["fresh", "resume", "overwrite"])
def test_a_link_planted_at_the_shard_folder_is_refused_and_its_target_left_alone(tmp_path, resume, overwrite):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "kept.txt").write_text("someone's file")
    (tmp_path / "shards").symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        sharded_out.open_dataset(tmp_path / "shards", resume=resume, overwrite=overwrite)
    assert os.listdir(target) == ["kept.txt"] and (target / "kept.txt").read_text() == "someone's file"


HOLD_LOCK = """
import sys, time
from facialattr.files import OutputLock
OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_ray_run_on_a_folder_being_written_fails_at_once_and_deletes_nothing(tmp_path, make_jpegs):
    from facialattr.client.ray_engine import score_paths_ray
    from facialattr.client.settings import ScorerSettings

    make_jpegs(tmp_path / "in", 2)
    out = sharded_out.open_dataset(tmp_path / "shards", resume=False, overwrite=False)
    (out / "part-000000.parquet").write_bytes(b"a shard of the first run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            # No server at this address: the lock is checked before anything else is tried.
            score_paths_ray([tmp_path / "in"], out=out, settings=ScorerSettings(urls="127.0.0.1:9"), overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert (out / "part-000000.parquet").read_bytes() == b"a shard of the first run"
