"""Outputs against another local user, and against a full disk: the real ``score`` and ``watch`` commands, a real server.

The attacker is user ``nobody`` (``setpriv``), who may plant names in a shared sticky folder
like /tmp on a host with ``fs.protected_symlinks=0``; facialattr runs as root, whose files the
attacker wants written, truncated or read. Each test plays one move and checks that the target
was neither created nor changed, that the run failed with one clear line, and that nothing else
was written. The folders are made under /tmp with modes that let ``nobody`` walk to the outputs,
so only each file's own mode keeps it private (pytest's tmp_path is 0700 and would hide them anyway).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import reliability_corpus as corpus
import reliability_support as support

from facialattr.app.cli import main
from facialattr.errors import EXIT_FATAL, EXIT_OK
from facialattr.files import lock_path_for

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_another_user = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                        reason="acting as another local user ('nobody') needs root and setpriv")
VICTIM_BYTES = b"path,status\nroot's row\ntorn last li"  # a resume would cut the torn line, an append would grow it


def as_nobody(*command: str | os.PathLike) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *map(os.fsdecode, command)], capture_output=True, timeout=30, check=False)


@dataclass(frozen=True)
class Host:
    shared: Path  # 1777, like /tmp: anyone may plant a name here
    private: Path  # 0700: root's files, which the attacker must not touch
    open_dir: Path  # 0755: outputs whose only protection is their own mode
    victim: Path  # a file of root's that a planted link points at

    def victim_unchanged(self) -> bool:
        st = self.victim.stat()
        return self.victim.read_bytes() == VICTIM_BYTES and st.st_mtime_ns == 1_000_000_000


@pytest.fixture
def host():
    base = Path(tempfile.mkdtemp(prefix="facialattr-outputs-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        folders = {"shared": 0o1777, "private": 0o700, "open_dir": 0o755}
        for name, mode in folders.items():
            (base / name).mkdir()
            os.chmod(base / name, mode)
        victim = base / "private" / "victim.csv"
        victim.write_bytes(VICTIM_BYTES)
        os.utime(victim, ns=(1_000_000_000, 1_000_000_000))
        yield Host(*(base / name for name in folders), victim)
    finally:
        shutil.rmtree(base)


def write_faces(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"face{i:03d}.jpg").write_bytes(corpus.encode(corpus.picture(seed=i), "JPEG"))
    return folder


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return write_faces(tmp_path_factory.mktemp("faces"), 6)


def score(faces: Path, out: Path, server, *flags: str) -> int:
    return main(["score", str(faces), "--out", str(out), "--url", server.config.grpc_url, "--no-progress", *flags])


# (--out, the name the attacker plants): the output itself, or the Parquet run's journal beside it.
PLANTED_NAMES = [("r.csv", "r.csv"), ("r.jsonl", "r.jsonl"), ("r.parquet", "r.parquet"),
                 ("r.parquet", ".r.parquet.journal.jsonl")]


@needs_another_user
@pytest.mark.parametrize("target", ["root's file", "a new file"])
@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]], ids=["no flag", "--overwrite", "--resume"])
@pytest.mark.parametrize(("out_name", "planted_name"), PLANTED_NAMES, ids=[p for _, p in PLANTED_NAMES])
def test_a_link_planted_at_an_output_name_is_refused_and_its_target_neither_made_nor_changed(
        host, faces, own_server, caplog, out_name, planted_name, flags, target):
    link_target = host.victim if target == "root's file" else host.private / "made-by-root"
    assert as_nobody("ln", "-s", link_target, host.shared / planted_name).returncode == 0
    assert score(faces, host.shared / out_name, own_server, *flags) == EXIT_FATAL
    assert f"{host.shared / planted_name}: the output is a symbolic link" in caplog.text
    assert host.victim_unchanged()
    assert not (host.private / "made-by-root").exists()
    assert os.listdir(host.shared) == [planted_name]  # no lock, journal or temporary file either


@needs_another_user
def test_another_users_file_at_the_output_is_not_resumed(host, faces, own_server, caplog):
    """Appending root's scores to a file the attacker owns would hand them the scores."""
    planted = host.shared / "r.csv"
    assert as_nobody("sh", "-c", f"printf 'path,status\\nrow\\ntorn' > {planted}").returncode == 0
    before = planted.read_bytes()
    assert score(faces, planted, own_server, "--resume") == EXIT_FATAL
    assert "belongs to another user (uid 65534)" in caplog.text
    assert planted.read_bytes() == before and os.listdir(host.shared) == ["r.csv"]


@needs_another_user
@pytest.mark.parametrize("planted", ["events", "video", "face crop"])
def test_a_link_planted_at_a_watch_output_is_refused_and_its_target_untouched(host, own_server, tmp_path, caplog, planted):
    from facialattr.client.cctv.synthetic import make_scene, write_folder

    frames = write_folder(make_scene(n_frames=6), tmp_path / "frames")
    events, video, crops = host.shared / "events.jsonl", host.shared / "video.avi", host.shared / "faces" / "cam0"
    if planted == "events":
        assert as_nobody("ln", "-s", host.victim, events).returncode == 0
    elif planted == "video":
        assert as_nobody("ln", "-s", host.victim, video).returncode == 0
    else:  # the attacker's own folders, with the names of the first crops linked to root's file
        names = [crops / f"track{t:05d}_frame0000000.jpg" for t in (1, 2, 3)]
        assert as_nobody("sh", "-c", f"mkdir -p {crops} && " + " && ".join(f"ln -s {host.victim} {n}" for n in names)
                         ).returncode == 0
    before = sorted(p.relative_to(host.shared) for p in host.shared.rglob("*"))
    code = main(["watch", "--detector", "haar", f"cam0={frames}", "--url", own_server.config.grpc_url,
                 "--events", str(events if planted == "events" else host.private / "events.jsonl"),
                 *(["--annotate", str(video)] if planted == "video" else []),
                 *(["--save-faces", str(crops.parent)] if planted == "face crop" else []),
                 "--no-recommendations", "--rescore-every", "5"])
    assert code == EXIT_FATAL
    assert "is a symbolic link" in caplog.text
    assert host.victim_unchanged()
    assert sorted(p.relative_to(host.shared) for p in host.shared.rglob("*")) == before


@needs_another_user
def test_scores_events_video_and_face_crops_are_readable_by_their_user_only_under_umask_022(
        host, faces, own_server, tmp_path):
    from facialattr.client.cctv.synthetic import make_scene, write_folder

    frames = write_folder(make_scene(n_frames=6), tmp_path / "frames")
    out = host.open_dir
    previous = os.umask(0o022)
    try:
        for suffix in (".csv", ".jsonl", ".parquet"):
            assert score(faces, out / f"r{suffix}", own_server) == EXIT_OK
        assert main(["watch", "--detector", "haar", f"cam0={frames}", "--url", own_server.config.grpc_url,
                     "--events", str(out / "events.jsonl"), "--annotate", str(out / "video.avi"),
                     "--save-faces", str(out / "faces"), "--no-recommendations", "--rescore-every", "5"]) == EXIT_OK
        control = out / "control.txt"
        control.write_text("what a 0644 file shows")  # made as open() makes files: 0666 less the umask
    finally:
        os.umask(previous)
    crops = sorted((out / "faces" / "cam0").iterdir())
    assert crops, "the watch saved no face crop to check"
    outputs = [out / name for name in ("r.csv", "r.jsonl", "r.parquet", "events.jsonl", "video.avi")]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in [*outputs, *crops]} == dict.fromkeys(
        [p.name for p in [*outputs, *crops]], "0o600")
    assert {oct((out / "faces").stat().st_mode & 0o777), oct((out / "faces" / "cam0").stat().st_mode & 0o777)} == {"0o700"}
    # The same read that fails on every output succeeds on the 0644 control in the same folder.
    assert as_nobody("cat", control).stdout == b"what a 0644 file shows"
    for path in outputs:
        read = as_nobody("cat", path)
        assert read.returncode != 0 and b"Permission denied" in read.stderr, path
    listing = as_nobody("ls", out / "faces")
    assert listing.returncode != 0 and b"Permission denied" in listing.stderr


@pytest.fixture(scope="module")
def slow_server(own_repository):
    """The real server taking 0.25 s per batch, so a run lasts long enough to start a second one beside it."""
    server = support.start(own_repository, delay_s=0.25)
    yield server
    server.stop()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_second_run_on_the_same_output_fails_at_once_and_the_first_completes_with_every_row_once(
        suffix, slow_server, tmp_path, caplog):
    folder = write_faces(tmp_path / "faces", 40)
    out = tmp_path / f"r{suffix}"
    first = subprocess.Popen(support.facialattr_command(
        "score", folder, "--out", out, "--url", slow_server.config.grpc_url, "--no-progress", "--batch-size", "2",
        "--max-in-flight", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        support.wait_until(lambda: lock_path_for(out).exists() or first.poll() is not None, timeout_s=120,
                           what="the first run to lock its output")
        started = time.monotonic()
        # --overwrite: the second run would delete the first one's rows if it got that far.
        assert score(folder, out, slow_server, "--overwrite") == EXIT_FATAL
        elapsed_s = time.monotonic() - started
        assert first.poll() is None, "the first run ended before the second was refused; the test proves nothing"
        assert elapsed_s < 5.0, f"the second run took {elapsed_s:.1f} s to fail"
        assert f"{out} is being written by another run (pid {first.pid}" in caplog.text
        assert first.wait(timeout=180) == EXIT_OK, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    rows = support.read_rows(out)
    assert len(rows) == 40 and sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", f"r{suffix}"]  # no lock, journal or temporary


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs: room for a few dozen result rows."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root, and a container allowing mounts): "
                    f"{mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def _complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends in a torn line"
    return data.splitlines()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_full_disk_ends_the_run_with_one_line_naming_the_output_and_resume_finishes_it(
        suffix, small_disk, own_server, tmp_path):
    folder = write_faces(tmp_path / "faces", 100)
    out = small_disk / f"r{suffix}"
    run = support.run_facialattr("score", folder, "--out", out, "--url", own_server.config.grpc_url, "--no-progress")
    assert run.returncode == EXIT_FATAL, run.stderr
    assert "Traceback" not in run.stderr
    (error,) = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert f"{out if suffix != '.parquet' else small_disk / '.r.parquet.journal.jsonl'}: cannot write: No space left on device" in error
    assert "--resume" in error
    # What is on disk is whole rows only: the CSV parses, every JSON line loads, the journal too.
    written = out if suffix != ".parquet" else small_disk / ".r.parquet.journal.jsonl"
    lines = _complete_lines(written)
    if suffix == ".csv":
        rows = support.read_rows(written)
        assert len(rows) == len(lines) - 1 > 0 and all(None not in r.values() for r in rows)
    else:
        assert len(lines) > 0 and all(json.loads(line)["status"] == "ok" for line in lines)
    if suffix == ".parquet":
        assert not out.exists()  # no Parquet file that looks complete
    assert sorted(os.listdir(small_disk)) == [written.name]  # no lock or temporary left on the full disk
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert score(folder, out, own_server, "--resume") == EXIT_OK
    rows = support.read_rows(out)
    assert len(rows) == 100 and sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.iterdir())
