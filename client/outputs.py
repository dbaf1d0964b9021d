"""Opening a run's result file: the writer is chosen by the file's suffix (CSV, JSONL or Parquet).

The one module that knows every writer, so ``results`` (CSV, JSONL) and ``parquet_out``
(Parquet, built on the JSONL writer) need not import each other; which suffix is which
format is client/rows.py's :func:`~facialattr.client.rows.output_format`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facialattr.client.parquet_out import ParquetWriter
from facialattr.client.results import CsvWriter, JsonlWriter
from facialattr.client.rows import output_format
from facialattr.contract import ModelContract
from facialattr.errors import InputError
from facialattr.files import refuse_link


def open_writer(out: Path, contract: ModelContract, *, resume: bool = False, overwrite: bool = False, **kwargs: Any):
    """The writer for ``out``'s format, opened; its ``done`` holds the paths already written.

    Raises InputError when the suffix is unknown, or when ``out`` (or a Parquet journal) exists
    and neither ``resume`` nor ``overwrite`` is set; resuming a malformed file raises InputError too.
    Raises OutputError for a symbolic link at an output name and OutputBusyError when another run
    writes ``out`` (the writer holds its lock until closed).
    """
    out = Path(out)
    fmt = output_format(out)
    for name in (out, ParquetWriter.journal_for(out)) if fmt == "parquet" else (out,):
        refuse_link(name)  # before "exists": a planted link is named as what it is, whatever the flags
    if not resume and not overwrite and (out.exists() or ParquetWriter.journal_for(out).exists()):
        raise InputError(f"{out} exists: pass --resume to continue it or --overwrite to replace it")
    writer = {"csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}[fmt](out, contract, **kwargs)
    writer.open(resume=resume)
    return writer
