"""Result files (CSV, JSONL, Parquet) that survive crashes and resume without duplicates.

CSV and JSONL are appended row by row and flushed + fsynced at checkpoints, so
every complete line on disk can be trusted; only the last line can be torn by
a crash, and resuming detects and drops it. Parquet cannot be appended, so rows
go to a JSONL journal next to it and the Parquet file is written from the
journal at the end, to a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from facialattr.client.batching import ItemResult
from facialattr.client.ranking import Ranker

from facialattr.contract import ModelContract
from facialattr.errors import InputError

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
TOP_K = 10
# Rows per Parquet row group; also bounds the Python rows held while converting (measured ~115 MB peak).
PARQUET_ROWS_PER_GROUP = 10_000


def output_format(out: Path) -> str:
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise InputError(f"{out}: output must end in .csv, .jsonl or .parquet")
    return fmt


def columns(contract: ModelContract) -> list[str]:
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
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing and resume:
            drop_torn_tail(self.path)
            self.done = set(self._read_paths())
            log.info("%s: resuming; %d inputs already done", self.path, len(self.done))
        elif existing:
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8", errors="surrogateescape", newline="")
        if fresh:
            self._write_header()

    def _read_paths(self) -> Iterator[str]:
        raise NotImplementedError

    def _write_header(self) -> None:
        pass

    def write(self, row: dict[str, Any]) -> None:
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
        if self._file is not None:
            self.checkpoint()
            self._file.close()
            self._file = None


class CsvWriter(_LineWriter):
    def _write_header(self) -> None:
        csv.writer(self._file, lineterminator="\n").writerow(self.columns)
        self.checkpoint()

    def _write_row(self, row: dict[str, Any]) -> None:
        values = [_csv_value(row[c]) for c in self.columns]
        csv.writer(self._file, lineterminator="\n").writerow(values)

    def _read_paths(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != self.columns:
                raise InputError(f"{self.path}: its columns differ from this model's; write to a new file")
            for number, row in enumerate(reader, start=2):
                if len(row) != len(self.columns):
                    raise InputError(f"{self.path}: row {number} is malformed; cannot resume safely")
                yield row[0]


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ";".join(value)
    return str(value)


class JsonlWriter(_LineWriter):
    def _write_row(self, row: dict[str, Any]) -> None:
        # ASCII-only JSON: always valid UTF-8, even for file names that are not.
        self._file.write(json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n")

    def _read_paths(self) -> Iterator[str]:
        yield from (row["path"] for row in read_jsonl(self.path))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path}: line {number} is not JSON; cannot resume safely") from None
            if not isinstance(row, dict) or "path" not in row:
                raise InputError(f"{path}: line {number} is not a result row")
            yield row


def open_writer(out: Path, contract: ModelContract, *, resume: bool = False, overwrite: bool = False, **kwargs: Any):
    """The writer for ``out``'s format, opened; its ``done`` holds the paths already written."""
    from facialattr.client.parquet_out import ParquetWriter

    out = Path(out)
    fmt = output_format(out)
    if not resume and not overwrite and (out.exists() or ParquetWriter.journal_for(out).exists()):
        raise InputError(f"{out} exists: pass --resume to continue it or --overwrite to replace it")
    writer = {"csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}[fmt](out, contract, **kwargs)
    writer.open(resume=resume)
    return writer
