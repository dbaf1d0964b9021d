"""Output files that hold faces or scores: private to their user, never written through a planted link.

Every output facialattr writes (result files and their journals, Ray shards and manifests,
watch events, annotated videos, saved face crops) is made here, so one policy holds:

- new files are 0600 and new folders 0700 whatever the umask: faces and scores are personal data;
- a name is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a file or a symbolic link that
  another user planted at it makes the call fail instead of being followed (``/tmp`` lets anyone
  plant names, and many hosts run with ``fs.protected_symlinks=0``);
- an existing file is reopened (resume, append, read back) without following a link, and only
  when it is a regular file of this user with a single name: nothing is truncated before that;
- a link at an output's own name is refused with :class:`OutputError` before anything is written.
  Links in the folders above it are followed: that path is the user's own choice;
- one run at a time per output: :class:`OutputLock`.

A file written whole goes through :func:`atomic_file`, the one atomic writer (a temporary name,
then a rename). Its mode policy: :data:`PRIVATE_FILE_MODE` (0600) unless the caller passes
another; only the Triton model repository passes :data:`SHARED_FILE_MODE` (0644), because the
server that reads it may run as another user and nothing in it is personal. Its fsync policy:
the data reaches the disk before the rename (a crash leaves the old file or the whole new one),
unless the caller passes ``durable=False`` for a file whose loss costs nothing and whose writer
must not wait on the disk (a face crop saved by the watch loop).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from facialattr.errors import OutputBusyError, OutputError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# Files another local user (the Triton server's) must read: the model repository's, never scores or faces.
SHARED_FILE_MODE = 0o644
TEMPORARY_SUFFIX = ".tmp"

__all__ = [
    "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "SHARED_FILE_MODE", "TEMPORARY_SUFFIX", "OutputLock", "atomic_file",
    "create_private", "lock_path_for", "make_private_dirs", "open_append", "open_own", "output_failure", "refuse_link",
    "remove_stale_temporaries",
]


def refuse_link(path: os.PathLike | str, *, what: str = "output") -> None:
    """Raise :class:`OutputError` when ``path`` itself is a symbolic link (whatever it points at)."""
    if os.path.islink(path):
        raise OutputError(f"{os.fsdecode(path)}: the {what} is a symbolic link; facialattr does not write through a "
                          "link at an output's name (another user may have planted it): remove it, or give the real path")


def output_failure(path: os.PathLike | str, exc: OSError, *, what: str = "", then: str = "") -> OutputError:
    """One line for an OSError while writing ``path`` (a full disk, a quota): its name, the cause, ``then`` what to do."""
    reason = exc.strerror or str(exc)
    return OutputError(f"{os.fsdecode(path)}: cannot write{' ' + what if what else ''}: {reason}"
                       + (f"; {then}" if then else ""))


def make_private_dirs(path: os.PathLike | str) -> Path:
    """The folder ``path``, created with its missing parents as 0700 (whatever the umask); existing ones are kept.

    Raises :class:`OutputError` when ``path`` is a symbolic link or not a folder.
    """
    path = Path(path)
    refuse_link(path, what="folder")
    missing = []
    folder = path
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            refuse_link(folder, what="folder")  # made meanwhile by someone else: usable unless it is a link
            continue
        except OSError as exc:
            raise output_failure(folder, exc, what="the folder") from None
        _chmod_own_folder(folder)
    if not path.is_dir():
        raise OutputError(f"{path}: not a folder")
    return path


def _chmod_own_folder(folder: Path) -> None:
    # Through a descriptor opened without following a link: a name swapped after mkdir is not chmod-ed.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, PRIVATE_DIR_MODE)  # the umask may have taken bits away (umask 0277 leaves 0500)
    finally:
        os.close(fd)


def create_private(path: os.PathLike | str, *, flags: int = os.O_WRONLY) -> int:
    """A descriptor of a new file at ``path``, mode 0600; ``flags`` add to ``O_CREAT|O_EXCL|O_NOFOLLOW``.

    Raises :class:`OutputError` when anything already has that name (a file, or a link planted
    there: it is not followed) or the file cannot be created.
    """
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        refuse_link(path)
        raise OutputError(f"{os.fsdecode(path)}: appeared while facialattr was creating it (another process made "
                          "it); not written") from None
    except OSError as exc:
        raise output_failure(path, exc) from None
    os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken bits away
    return fd


def open_own(path: os.PathLike | str, flags: int, *, devices_ok: bool = False) -> int:
    """A descriptor of the existing file ``path``, opened without following a link and checked before any use.

    It must be a regular file (or, with ``devices_ok``, a character device such as /dev/null,
    which only root can create), owned by this user, with one name (a hard link another
    user made to a file has two). Raises :class:`OutputError` otherwise, FileNotFoundError when
    there is no such file.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        if isinstance(exc, FileNotFoundError):
            raise
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.lstat(path).st_mode):  # e.g. a FIFO without a reader (ENXIO)
                raise OutputError(f"{os.fsdecode(path)}: is not a regular file; facialattr only resumes or appends "
                                  "to a file it wrote for this user") from None
        raise output_failure(path, exc, what="or read") from None
    st = os.fstat(fd)
    if devices_ok and stat.S_ISCHR(st.st_mode):
        return fd
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to another user (uid {st.st_uid})"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} names (hard links)"
    if problem:
        os.close(fd)
        raise OutputError(f"{os.fsdecode(path)}: {problem}; facialattr only resumes or appends to a file it wrote "
                          "for this user")
    return fd


def open_append(path: os.PathLike | str, *, devices_ok: bool = False) -> int:
    """A descriptor appending to ``path``: a new private file, or an existing one that passes :func:`open_own`."""
    return _open_or_create(path, os.O_WRONLY | os.O_APPEND, devices_ok=devices_ok)


def _open_or_create(path: os.PathLike | str, flags: int, *, devices_ok: bool = False) -> int:
    for _ in range(3):  # the name may come and go between the two opens
        if not os.path.lexists(path):
            try:
                return create_private(path, flags=flags)
            except OutputError:
                if not os.path.lexists(path):
                    raise
        try:
            return open_own(path, flags, devices_ok=devices_ok)
        except FileNotFoundError:
            continue
    raise OutputError(f"{os.fsdecode(path)}: keeps appearing and disappearing; not written")


def remove_stale_temporaries(path: os.PathLike | str) -> None:
    """Remove this user's temporary files of ``path`` (``.NAME.*.tmp``) that a run killed while writing left."""
    path = Path(path)
    for name in glob.glob(os.path.join(glob.escape(os.fsdecode(path.parent)), f".{glob.escape(path.name)}.*{TEMPORARY_SUFFIX}")):
        with contextlib.suppress(OSError):
            st = os.lstat(name)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(name)


@contextlib.contextmanager
def atomic_file(path: os.PathLike | str, *, mode: int = PRIVATE_FILE_MODE, text: bool = False,
                durable: bool = True) -> Iterator[IO]:
    """A new file that replaces ``path`` whole when the block ends without an error, or not at all.

    Written to a 0600 temporary name beside ``path`` (``.NAME.XXXXXXXX.tmp``, made with
    O_EXCL|O_NOFOLLOW), given ``mode`` whatever the umask (see the module doc for when it is not
    0600), fsynced and renamed: readers see the old file or the new one, and a rename replaces a
    link at ``path`` rather than following it. ``text``: a UTF-8 text file (``\\n`` line ends), else
    binary. ``durable=False`` skips the fsync (a crash may then leave the new file empty). Raises
    :class:`OutputError` for a link at ``path`` or a temporary file that cannot be made; an OSError
    while writing (a full disk) propagates, and the temporary file is removed.
    """
    path = Path(path)
    refuse_link(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as exc:
        raise output_failure(path, exc) from None
    try:
        os.fchmod(fd, mode)
        with open(fd, "w" if text else "wb", encoding="utf-8" if text else None, newline="" if text else None) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def lock_path_for(path: os.PathLike | str) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """One run at a time per output: an exclusive ``flock`` on ``.NAME.lock`` beside it, held for the run.

    A second run on the same output fails at once with :class:`OutputBusyError` naming the output
    and the process that holds it (its pid is written in the lock file). The kernel drops the lock
    when its process dies, so a killed run leaves no stale lock, only the file, which the next run
    reuses; a run that ends normally removes it.
    """

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)
        self.lock_path = lock_path_for(self.path)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock (creating the output's folder if needed); raises OutputBusyError or OutputError."""
        refuse_link(self.path)
        make_private_dirs(self.path.parent)
        while True:
            fd = _open_or_create(self.lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputBusyError(f"{self.path} is being written by another run ({holder}); wait for it to "
                                      "end, or write to another output") from None
            # The holder before us may have removed the file after we opened it: then we locked an orphan.
            try:
                current = os.lstat(self.lock_path)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, so no one locks a file about to vanish)."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    """Who holds a lock: "pid N, COMMAND" from the pid it wrote, or "pid unknown" while it has not written it yet."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return "pid unknown"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}: {command[:200]}" if command else f"pid {pid}"
