r"""A result row: its columns, how it is made from an input's outcome, its form in each file format, and reading it back.

One home for what a row of ``facialattr score`` holds, whatever writes it (client/results.py
for CSV and JSONL, client/parquet_out.py for Parquet, the Ray engine's shards) and whatever
reads it (resume, the demo's table, tests): :func:`read_rows` reads any of the formats.

CSV cells are safe to open in a spreadsheet and to read with a strict UTF-8 reader:
fields holding a quote, comma or line break (CR too) are quoted; a text cell that a
spreadsheet would take for a formula (starting with ``= + - @``, tab or CR) or that
starts with ``'`` gets a leading ``'``; a backslash is written ``\\`` and a byte of
a name that is not UTF-8 is written ``\xNN``. :func:`path_from_csv` undoes this
exactly (resume uses it). JSONL and Parquet keep the exact path (Parquet in ``path_bytes``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facialattr.client.batching import ItemResult
from facialattr.client.ranking import Ranker
from facialattr.contract import ModelContract
from facialattr.errors import ErrorKind, InputError

TOP_K = 10
# Result file suffixes and their formats.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# A text cell starting with one of these is neutralised in CSV ("'" itself too, so the escape is reversible).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
# Rows per Parquet row group, written and read back at a time; also bounds the Python rows held while
# converting (measured ~115 MB peak).
PARQUET_ROWS_PER_GROUP = 10_000


def output_format(path: os.PathLike | str) -> str:
    """``"csv"``, ``"jsonl"`` or ``"parquet"`` from ``path``'s suffix; raises InputError for any other suffix."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{os.fsdecode(path)}: output must end in .csv, .jsonl or .parquet")
    return fmt


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
        """One output row; probabilities are float32 values written exactly (as doubles).

        An error row's ``error_kind`` and ``error`` are the result's kind (its value, a plain string)
        and message on one line.
        """
        row: dict[str, Any] = {"path": result.path}
        if not result.ok:
            row.update(status="error", error_kind=ErrorKind.of(result.error_kind).value,
                       error=_one_line(result.error or ""))
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


def is_final(error_kind: str | None) -> bool:
    """False for a row the server failed (a resumed run drops it and scores its input again)."""
    return not ErrorKind.of(error_kind).retryable


# CSV


def csv_line(values: list[str]) -> str:
    """One CSV line (``\\n``-terminated) of cells already in CSV form."""
    out = io.StringIO()
    # QUOTE_MINIMAL does not quote a lone CR when lines end in "\n"; such a row is quoted whole.
    quoting = csv.QUOTE_ALL if any("\r" in v for v in values) else csv.QUOTE_MINIMAL
    csv.writer(out, lineterminator="\n", quoting=quoting).writerow(values)
    return out.getvalue()


def csv_cells(row: dict[str, Any], names: list[str]) -> list[str]:
    """The CSV cells of ``row`` in the order of ``names``: flags 1/0, top10 ``;``-joined, text as :func:`csv_text`."""
    return [_csv_value(row[c]) for c in names]


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


# JSON lines


def json_line(row: dict[str, Any]) -> str:
    """One JSON line of ``row``, ASCII-only so it is valid UTF-8 whatever the file names."""
    return json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n"


def jsonl_rows(f: io.TextIOBase, name: os.PathLike | str) -> Iterator[dict[str, Any]]:
    """The rows of the JSON-lines text ``f``; InputError naming ``name`` and the line that is not a result row."""
    for number, line in enumerate(f, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{name}: line {number} is not JSON; cannot resume safely") from None
        if not isinstance(row, dict) or "path" not in row:
            raise InputError(f"{name}: line {number} is not a result row")
        yield row


# Parquet (Arrow)


def parquet_schema(contract: ModelContract):
    """The Arrow schema of a result row in Parquet (the single-process file and the Ray engine's shards)."""
    import pyarrow as pa

    names = contract.attribute_names
    # Parquet strings must be UTF-8; file names need not be. "path" is for reading (undecodable
    # bytes shown as U+FFFD), "path_bytes" is the exact name, used when a run is resumed.
    fields = [pa.field(c, pa.string()) for c in ("path", "status", "error_kind", "error")]
    fields.insert(1, pa.field("path_bytes", pa.binary()))
    fields += [pa.field(n, pa.float32()) for n in names]
    fields += [pa.field(f"{n}_present", pa.bool_()) for n in names]
    fields.append(pa.field("top10", pa.list_(pa.string())))
    return pa.schema(fields)


def record_batch(rows: list[dict[str, Any]], schema):
    """Result rows (as RowMaker makes them; modified in place) as one Arrow record batch of ``schema``."""
    import pyarrow as pa

    for row in rows:
        raw = os.fsencode(row["path"])
        row["path_bytes"], row["path"] = raw, raw.decode("utf-8", "replace")
        row["error"] = row["error"].encode("utf-8", "replace").decode("utf-8")
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def row_from_arrow(row: dict[str, Any]) -> dict[str, Any]:
    """A row read from Parquet as RowMaker made it (modified in place): the exact path, from ``path_bytes``."""
    row["path"] = os.fsdecode(row.pop("path_bytes"))
    return row


# Reading


def read_rows(path: os.PathLike | str) -> Iterator[dict[str, Any]]:
    """The rows of a result file, in file order, as written: CSV cells are strings (``path`` as
    :func:`csv_text` wrote it), JSONL and Parquet keep their types (Parquet has ``path_bytes`` too).

    Reads one Parquet row group's worth at a time. Raises InputError for a suffix that is no result
    format (at once), OSError when the file cannot be read (while iterating).
    """
    path = Path(path)
    return {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[output_format(path)](path)


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=PARQUET_ROWS_PER_GROUP):
            yield from batch.to_pylist()
