r"""Result files (CSV, JSONL, Parquet) that survive crashes and resume without duplicates.

CSV and JSONL are appended row by row and flushed + fsynced at checkpoints, so
every complete line on disk can be trusted; only the last line can be torn by
a crash, and resuming detects and drops it. Parquet cannot be appended, so rows
go to a JSONL journal next to it and the Parquet file is written from the
journal at the end, to a temporary name and renamed into place.

Every file is made as facialattr/files.py makes outputs: mode 0600 whatever the umask,
never through a symbolic link at its name (refused), an existing file resumed only when
it is this user's regular file, and one run at a time per output (a lock beside it). A
write that fails (a full disk) is one OutputError naming the file: the row it tore is
cut, so the file holds whole rows only, and ``--resume`` continues it.

Rows whose failure was the server's (error kind ``server``, or the older ``inference``)
are not final: a resumed run drops them from the file and scores those inputs again.

What a row holds and how it looks in each format (safe CSV cells, ASCII JSON lines) is
client/rows.py's; this module only writes the rows it is given.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facialattr.client.rows import (
    columns,
    csv_cells,
    csv_line,
    is_final,
    json_line,
    jsonl_rows,
    path_from_csv,
)
from facialattr.contract import ModelContract
from facialattr.errors import InputError, OutputError
from facialattr.files import (
    OutputLock,
    atomic_file,
    create_private,
    open_own,
    output_failure,
    refuse_link,
    remove_stale_temporaries,
)

log = logging.getLogger(__name__)


def drop_torn_tail(path: Path) -> bool:
    """Truncate ``path`` after its last newline; True if a torn last line was dropped.

    The file is opened as :func:`~facialattr.files.open_own` allows (not through a link, only
    this user's regular file): OutputError otherwise, before a byte is cut.
    """
    fd = open_own(path, os.O_RDWR)
    try:
        return _drop_torn_tail(fd, path)
    finally:
        os.close(fd)


def _drop_torn_tail(fd: int, name: Path) -> bool:
    if not _cut_after_last_newline(fd):
        return False
    log.warning("%s: dropped a torn last line (the run before was interrupted while writing)", name)
    return True


def _cut_after_last_newline(fd: int) -> bool:
    """Truncate the file behind ``fd`` after its last newline (fsynced); True if it had a torn last line."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return False
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        cut = os.pread(fd, pos - start, start).rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            break
        pos = start
    else:
        os.ftruncate(fd, 0)
    os.fsync(fd)
    return True


def _reader(fd: int) -> io.TextIOWrapper:
    """The whole file behind ``fd`` as text, from its start (a duplicate descriptor: closing it keeps ``fd``)."""
    f = open(os.dup(fd), encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115 - callers close it
    f.seek(0)
    return f


class _LineWriter:
    """Append-only line file with fsync checkpoints; subclasses format the lines.

    Files are made as facialattr/files.py makes outputs: 0600, never through a link, one run at
    a time (the output's lock is held from :meth:`open` to :meth:`close`).
    """

    def __init__(self, path: Path, contract: ModelContract, *, out: Path | None = None, checkpoint_every_s: float = 2.0,
                 checkpoint_every_rows: int = 2000):
        self.path, self.contract = Path(path), contract
        self.out = Path(out) if out is not None else self.path  # what the user asked for; locked for the run
        self.columns = columns(contract)
        self.done: set[str] = set()
        self.checkpoint_every_s, self.checkpoint_every_rows = checkpoint_every_s, checkpoint_every_rows
        self._file = None
        self._lock: OutputLock | None = None
        self._unsynced = 0
        self._failed = False
        self._last_sync = time.monotonic()

    def _names(self) -> list[Path]:
        """Every name this writer creates or replaces (each refused when it is a symbolic link)."""
        return list(dict.fromkeys([self.out, self.path]))

    def open(self, *, resume: bool) -> None:
        """Lock the output and create the file, or with ``resume`` keep its final rows (``done``) and drop a torn
        last line and retryable rows. Raises OutputError for a link at an output name, a file of another user or
        another run writing the output (OutputBusyError), InputError when an existing file is not this run's format
        or columns; nothing is written or truncated before those checks."""
        for name in self._names():
            refuse_link(name)
        self._lock = OutputLock(self.out).acquire()
        try:
            for name in self._names():
                remove_stale_temporaries(name)
            self._open(resume=resume)
        except BaseException:
            self._release()
            raise

    def _open(self, *, resume: bool) -> None:
        fd = None
        if resume:
            with contextlib.suppress(FileNotFoundError):
                fd = open_own(self.path, os.O_RDWR | os.O_APPEND)
        else:
            self.path.unlink(missing_ok=True)  # not a link (refused above); --overwrite or a fresh run
        if fd is not None and os.fstat(fd).st_size > 0:
            fd = self._resume(fd)
            fresh = False
        else:
            fd = fd if fd is not None else create_private(self.path, flags=os.O_RDWR | os.O_APPEND)
            fresh = True
        self._file = open(fd, "a", encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115 - closed in close()
        if fresh:
            self._write_header()

    def _resume(self, fd: int) -> int:
        """Read the rows of an earlier run through ``fd``; returns the descriptor to append to."""
        try:
            _drop_torn_tail(fd, self.path)
            retry = 0
            with _reader(fd) as f:
                for path, error_kind in self._read_rows(f):
                    if is_final(error_kind):
                        self.done.add(path)
                    else:
                        retry += 1
            if retry:
                self._rewrite_final_rows_only(fd)
                os.close(fd)
                fd = -1
                fd = open_own(self.path, os.O_RDWR | os.O_APPEND)  # the rewritten file
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        log.info("%s: resuming; %d inputs already done, %d server failures to score again",
                 self.path, len(self.done), retry)
        return fd

    def _read_rows(self, f: io.TextIOWrapper) -> Iterator[tuple[str, str]]:
        """(path, error_kind) of every row in ``f``."""
        raise NotImplementedError

    def _final_records(self, f: io.TextIOWrapper) -> Iterator[str]:
        """The text of every row of ``f`` that is final (not a retryable server failure), header included."""
        raise NotImplementedError

    def _rewrite_final_rows_only(self, fd: int) -> None:
        """Drop retryable rows (the resumed run writes them again): a new file renamed into place."""
        with _reader(fd) as old, atomic_file(self.path) as new:
            for record in self._final_records(old):
                new.write(record.encode("utf-8", "surrogateescape"))

    def _write_header(self) -> None:
        pass

    def write(self, row: dict[str, Any]) -> None:
        """Append one row; a checkpoint follows every ``checkpoint_every_rows`` rows or ``checkpoint_every_s`` seconds.

        Raises OutputError when the file cannot be written (a full disk): the row the failed write tore is cut,
        so the file holds whole rows only, and --resume continues it.
        """
        try:
            self._write_row(row)
        except OSError as exc:  # a buffer flush reached the disk and failed
            raise self._failure(exc) from None
        self._unsynced += 1
        if self._unsynced >= self.checkpoint_every_rows or time.monotonic() - self._last_sync >= self.checkpoint_every_s:
            self.checkpoint()

    def _write_row(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Everything written so far is on disk, as complete lines (OutputError when it cannot be, as in write)."""
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise self._failure(exc) from None
        self._unsynced, self._last_sync = 0, time.monotonic()

    def _failure(self, exc: OSError) -> OutputError:
        """Give up writing: cut the row the failed write tore, drop what is still buffered, unlock; the error to raise."""
        f, self._file, self._failed = self._file, None, True
        with contextlib.suppress(OSError):
            _cut_after_last_newline(f.fileno())  # a shrink needs no space, so it works on a full disk
        # Closing the descriptor underneath makes the wrapper's close a no-op: no second flush into the full disk.
        f.buffer.raw.close()
        self._release()
        kept = (f"{self.out} is not written yet, its rows so far are kept here" if self.out != self.path
                else "the rows written before are kept")
        return output_failure(self.path, exc, then=f"{kept}: rerun with --resume once there is room")

    def close(self, *, complete: bool) -> None:
        """Checkpoint, close and unlock; ``complete`` says the run finished (subclasses may finalise the file then).

        After a write failure (OutputError already raised) this does nothing.
        """
        if self._failed:
            return
        try:
            if self._file is not None:
                self.checkpoint()
                self._file.close()
                self._file = None
            self._finish(complete=complete)
        finally:
            self._release()

    def _finish(self, *, complete: bool) -> None:
        """What a closed writer does with its file (while the output is still locked)."""

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class CsvWriter(_LineWriter):
    """CSV result file: spreadsheet-safe, reversible cells (see the module doc)."""

    def _write_header(self) -> None:
        csv.writer(self._file, lineterminator="\n").writerow(self.columns)
        self.checkpoint()

    def _write_row(self, row: dict[str, Any]) -> None:
        self._file.write(csv_line(csv_cells(row, self.columns)))

    def _csv_rows(self, f: io.TextIOWrapper) -> Iterator[list[str]]:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != self.columns:
            raise InputError(f"{self.path}: its columns differ from this model's; write to a new file")
        for number, row in enumerate(reader, start=2):
            if len(row) != len(self.columns):
                raise InputError(f"{self.path}: row {number} is malformed; cannot resume safely")
            yield row

    def _read_rows(self, f: io.TextIOWrapper) -> Iterator[tuple[str, str]]:
        kind = self.columns.index("error_kind")
        for row in self._csv_rows(f):
            yield path_from_csv(row[0]), row[kind]

    def _final_records(self, f: io.TextIOWrapper) -> Iterator[str]:
        kind = self.columns.index("error_kind")
        yield csv_line(self.columns)
        yield from (csv_line(row) for row in self._csv_rows(f) if is_final(row[kind]))


class JsonlWriter(_LineWriter):
    """JSON-lines result file, ASCII-only so every line is valid UTF-8 whatever the file names."""

    def _write_row(self, row: dict[str, Any]) -> None:
        self._file.write(json_line(row))

    def _read_rows(self, f: io.TextIOWrapper) -> Iterator[tuple[str, str]]:
        yield from ((row["path"], row.get("error_kind") or "") for row in jsonl_rows(f, self.path))

    def _final_records(self, f: io.TextIOWrapper) -> Iterator[str]:
        for line in f:
            if is_final(json.loads(line).get("error_kind")):
                yield line


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines result file this user wrote (opened as :func:`~facialattr.files.open_own` allows);
    raises InputError naming the line that is not a result row."""
    with open(open_own(path, os.O_RDONLY), encoding="utf-8") as f:
        yield from jsonl_rows(f, path)

