r"""Result files (CSV, JSONL, Parquet) that survive crashes and resume without duplicates.

CSV and JSONL are appended row by row and flushed + fsynced at checkpoints, so
every complete line on disk can be trusted; only the last line can be torn by
a crash, and resuming detects and drops it. Parquet cannot be appended, so rows
go to a JSONL journal next to it and the Parquet file is written from the
journal at the end, to a temporary name and renamed into place.

Rows whose failure was the server's (error kind ``server``, or the older ``inference``)
are not final: a resumed run drops them from the file and scores those inputs again.

CSV cells are safe to open in a spreadsheet and to read with a strict UTF-8 reader:
fields holding a quote, comma or line break (CR too) are quoted; a text cell that a
spreadsheet would take for a formula (starting with ``= + - @``, tab or CR) or that
starts with ``'`` gets a leading ``'``; a backslash is written ``\\`` and a byte of
a name that is not UTF-8 is written ``\xNN``. :func:`path_from_csv` undoes this
exactly (resume uses it). JSONL and Parquet keep the exact path.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facialattr.client.batching import SERVER_ERROR_KIND, ItemResult
from facialattr.client.ranking import Ranker
from facialattr.contract import ModelContract
from facialattr.errors import InputError

log = logging.getLogger(__name__)

TOP_K = 10
# Error kinds of rows a resumed run scores again: the server failed, not the image ("inference": older runs).
RETRYABLE_ERROR_KINDS = frozenset({SERVER_ERROR_KIND, "inference"})
# A text cell starting with one of these is neutralised in CSV ("'" itself too, so the escape is reversible).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
# Rows per Parquet row group; also bounds the Python rows held while converting (measured ~115 MB peak).
PARQUET_ROWS_PER_GROUP = 10_000


def columns(contract: ModelContract) -> list[str]:
    """A result row's columns: path, status, error kind and text, one probability and one present flag per attribute, top10."""
    names = list(contract.attribute_names)
    return ["path", "status", "error_kind", "error", *names, *[f"{n}_present" for n in names], "top10"]


class RowMaker:
    """Builds output rows; the contract's names, thresholds and ranking are prepared once."""

    def __init__(self, contract: ModelContract) -> None:
        self.contract = contract
        self.names = contract.attribute_names
        self.present_names = [f"{n}_present" for n in self.names]
        self.thresholds = np.asarray(contract.thresholds, dtype=np.float32)
        self.ranker = Ranker(contract)
        self._empty = {**dict.fromkeys(self.names), **dict.fromkeys(self.present_names)}

    def row(self, result: ItemResult) -> dict[str, Any]:
        """One output row; probabilities are float32 values written exactly (as doubles)."""
        row: dict[str, Any] = {"path": result.path}
        if not result.ok:
            row.update(status="error", error_kind=result.error_kind or "input", error=_one_line(result.error or ""))
            row.update(self._empty)
            row["top10"] = []
            return row
        p = np.asarray(result.probabilities, dtype=np.float32)
        row.update(status="ok", error_kind="", error="")
        row.update(zip(self.names, p.tolist(), strict=True))
        row.update(zip(self.present_names, (p >= self.thresholds).tolist(), strict=True))
        row["top10"] = self.ranker.top_names(p, TOP_K)
        return row


def make_row(result: ItemResult, contract: ModelContract) -> dict[str, Any]:
    """One output row (see :class:`RowMaker`, which is faster for many rows)."""
    return RowMaker(contract).row(result)


def _one_line(text: str) -> str:
    # A newline inside a field would break "every complete line is a row".
    return " ".join(text.splitlines())


def drop_torn_tail(path: Path) -> bool:
    """Truncate ``path`` after its last newline; True if a torn last line was dropped."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                break
            pos = start
        else:
            f.truncate(0)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: dropped a torn last line (the run before was interrupted while writing)", path)
    return True


class _LineWriter:
    """Append-only line file with fsync checkpoints; subclasses format the lines."""

    def __init__(self, path: Path, contract: ModelContract, *, checkpoint_every_s: float = 2.0, checkpoint_every_rows: int = 2000):
        self.path, self.contract = Path(path), contract
        self.columns = columns(contract)
        self.done: set[str] = set()
        self.checkpoint_every_s, self.checkpoint_every_rows = checkpoint_every_s, checkpoint_every_rows
        self._file = None
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def open(self, *, resume: bool) -> None:
        """Create the file, or with ``resume`` keep its final rows (``done``) and drop a torn last line and
        retryable rows; raises InputError when an existing file is not this run's format or columns."""
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing and resume:
            drop_torn_tail(self.path)
            retry = 0
            for path, error_kind in self._read_rows():
                if error_kind in RETRYABLE_ERROR_KINDS:
                    retry += 1
                else:
                    self.done.add(path)
            if retry:
                self._rewrite_final_rows_only()
            log.info("%s: resuming; %d inputs already done, %d server failures to score again",
                     self.path, len(self.done), retry)
        elif existing:
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8", errors="surrogateescape", newline="")
        if fresh:
            self._write_header()

    def _read_rows(self) -> Iterator[tuple[str, str]]:
        """(path, error_kind) of every row on disk."""
        raise NotImplementedError

    def _final_records(self) -> Iterator[str]:
        """The text of every row that is final (not a retryable server failure), header included."""
        raise NotImplementedError

    def _rewrite_final_rows_only(self) -> None:
        """Drop retryable rows (the resumed run writes them again): a new file renamed into place."""
        tmp = self.path.with_name(f".{self.path.name}.resume.tmp")
        with create_with_umask(tmp) as f:
            for record in self._final_records():
                f.write(record)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _write_header(self) -> None:
        pass

    def write(self, row: dict[str, Any]) -> None:
        """Append one row; a checkpoint follows every ``checkpoint_every_rows`` rows or ``checkpoint_every_s`` seconds."""
        self._write_row(row)
        self._unsynced += 1
        if self._unsynced >= self.checkpoint_every_rows or time.monotonic() - self._last_sync >= self.checkpoint_every_s:
            self.checkpoint()

    def _write_row(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Everything written so far is on disk, as complete lines."""
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced, self._last_sync = 0, time.monotonic()

    def close(self, *, complete: bool) -> None:
        """Checkpoint and close; ``complete`` says the run finished (subclasses may finalise the file then)."""
        if self._file is not None:
            self.checkpoint()
            self._file.close()
            self._file = None


class CsvWriter(_LineWriter):
    """CSV result file: spreadsheet-safe, reversible cells (see the module doc)."""

    def _write_header(self) -> None:
        csv.writer(self._file, lineterminator="\n").writerow(self.columns)
        self.checkpoint()

    def _write_row(self, row: dict[str, Any]) -> None:
        self._file.write(_csv_line([_csv_value(row[c]) for c in self.columns]))

    def _csv_rows(self) -> Iterator[list[str]]:
        with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != self.columns:
                raise InputError(f"{self.path}: its columns differ from this model's; write to a new file")
            for number, row in enumerate(reader, start=2):
                if len(row) != len(self.columns):
                    raise InputError(f"{self.path}: row {number} is malformed; cannot resume safely")
                yield row

    def _read_rows(self) -> Iterator[tuple[str, str]]:
        kind = self.columns.index("error_kind")
        for row in self._csv_rows():
            yield path_from_csv(row[0]), row[kind]

    def _final_records(self) -> Iterator[str]:
        kind = self.columns.index("error_kind")
        yield _csv_line(self.columns)
        yield from (_csv_line(row) for row in self._csv_rows() if row[kind] not in RETRYABLE_ERROR_KINDS)


def _csv_line(values: list[str]) -> str:
    out = io.StringIO()
    # QUOTE_MINIMAL does not quote a lone CR when lines end in "\n"; such a row is quoted whole.
    quoting = csv.QUOTE_ALL if any("\r" in v for v in values) else csv.QUOTE_MINIMAL
    csv.writer(out, lineterminator="\n", quoting=quoting).writerow(values)
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, str):
        return csv_text(value)
    return str(value)


def csv_text(text: str) -> str:
    """A text cell as written to CSV: strict UTF-8, no formula, reversible with :func:`path_from_csv`."""
    out = text.replace("\\", "\\\\")
    if any("\udc80" <= ch <= "\udcff" for ch in out):  # bytes os.fsdecode could not decode
        out = "".join(f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else ch for ch in out)
    return "'" + out if out.startswith(_FORMULA_STARTS) else out


def path_from_csv(cell: str) -> str:
    """The path (os.fsdecode form) a CSV ``path`` cell stands for: the inverse of :func:`csv_text`."""
    if cell.startswith("'"):
        cell = cell[1:]
    if "\\" not in cell:
        return cell
    return re.sub(r"\\(\\|x([0-9a-f]{2}))",
                  lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(2), 16)), cell)


@contextlib.contextmanager
def create_with_umask(path: Path, *, mode: str = "w"):
    """A new file created with permissions 0666 less the umask (as ``open`` does), replacing a stale one."""
    Path(path).unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    with open(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "") as f:
        yield f


class JsonlWriter(_LineWriter):
    """JSON-lines result file, ASCII-only so every line is valid UTF-8 whatever the file names."""

    def _write_row(self, row: dict[str, Any]) -> None:
        # ASCII-only JSON: always valid UTF-8, even for file names that are not.
        self._file.write(json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n")

    def _read_rows(self) -> Iterator[tuple[str, str]]:
        yield from ((row["path"], row.get("error_kind") or "") for row in read_jsonl(self.path))

    def _final_records(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if (json.loads(line).get("error_kind") or "") not in RETRYABLE_ERROR_KINDS:
                    yield line


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines result file; raises InputError naming the line that is not a result row."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path}: line {number} is not JSON; cannot resume safely") from None
            if not isinstance(row, dict) or "path" not in row:
                raise InputError(f"{path}: line {number} is not a result row")
            yield row
