"""Private work folders of embedded servers, and the removal of those whose launcher died.

A launcher killed with SIGKILL cannot clean up: its ``/tmp/facialattr-triton-*`` folder
(derived repository, log, preload library) and its ``/dev/shm`` regions stay behind. Each
folder names its launcher (pid and kernel start time, so a reused pid is not mistaken for
it) and its shared-memory prefix; the next start removes every folder of this user whose
launcher is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "facialattr-triton-"
_OWNER_FILE = "launcher"
# A folder from before owner files existed is taken as stale only when this old.
_LEGACY_AGE_S = 3600.0


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def create(shm_prefix: str) -> Path:
    """A new private (0700) work folder that records this process as its launcher."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    pid = os.getpid()
    (folder / _OWNER_FILE).write_text(f"{pid} {_start_time(pid)} {shm_prefix}\n")
    return folder


def _is_stale(folder: Path) -> tuple[bool, str | None]:
    """(stale?, its shared-memory prefix if known)."""
    try:
        pid, start, shm_prefix = (folder / _OWNER_FILE).read_text().split()
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > _LEGACY_AGE_S, None
    except (OSError, ValueError):
        return False, None
    return _start_time(int(pid)) != start, shm_prefix


def remove_stale(*, root: Path | None = None) -> list[Path]:
    """Remove this user's work folders (and shm regions) of launchers that no longer run; returns them."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            stale, shm_prefix = _is_stale(folder)
        except OSError:  # removed by someone else meanwhile
            continue
        if not stale:
            continue
        if shm_prefix and shm_prefix.startswith("facialattr_"):
            for region in Path("/dev/shm").glob(f"{shm_prefix}*"):
                region.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        log.info("removed %d work folder(s) of embedded servers that died: %s", len(removed),
                 ", ".join(map(str, removed)))
    return removed
