"""Parquet output: rows are journalled as JSONL, then written as one Parquet file at the end, atomically.

The columns and the Arrow form of a row are client/rows.py's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facialattr.client.results import JsonlWriter, read_jsonl
from facialattr.client.rows import PARQUET_ROWS_PER_GROUP, json_line, parquet_schema, record_batch, row_from_arrow
from facialattr.contract import ModelContract
from facialattr.files import atomic_file, open_own, output_failure

log = logging.getLogger(__name__)


class ParquetWriter(JsonlWriter):
    """A JSONL journal beside ``out``; ``close(complete=True)`` turns it into ``out``."""

    def __init__(self, out: Path, contract: ModelContract, **kwargs: Any) -> None:
        super().__init__(self.journal_for(out), contract, out=out, **kwargs)

    @staticmethod
    def journal_for(out: Path) -> Path:
        """The hidden JSONL journal beside ``out`` that holds the rows until the Parquet file is written."""
        out = Path(out)
        return out.with_name(f".{out.name}.journal.jsonl")

    def _open(self, *, resume: bool) -> None:
        """Open the journal; resuming a finished Parquet file seeds the journal from it, a fresh run removes it."""
        if resume and os.path.lexists(self.out) and not os.path.lexists(self.path):
            # A finished run is being extended: its rows seed the journal.
            self._journal_from_parquet()
        elif not resume:
            self.out.unlink(missing_ok=True)  # not a link: refused before the lock
        super()._open(resume=resume)

    def _journal_from_parquet(self) -> None:
        import pyarrow.parquet as pq

        with open(open_own(self.out, os.O_RDONLY), "rb") as source, atomic_file(self.path) as journal:
            for batch in pq.ParquetFile(source).iter_batches(batch_size=PARQUET_ROWS_PER_GROUP):
                for row in batch.to_pylist():
                    journal.write(json_line(row_from_arrow(row)).encode("ascii"))

    def _finish(self, *, complete: bool) -> None:
        """When ``complete``, write ``out`` from the journal atomically and remove the journal."""
        if not complete:
            log.warning("%s not written yet: %s keeps the rows so far; rerun with --resume", self.out, self.path)
            return
        self._write_parquet()
        self.path.unlink()

    def schema(self):
        """The Arrow schema of this run's rows (:func:`parquet_schema`)."""
        return parquet_schema(self.contract)

    def _batches(self, schema) -> Iterator:
        rows: list[dict[str, Any]] = []
        for row in read_jsonl(self.path):
            rows.append(row)
            if len(rows) >= PARQUET_ROWS_PER_GROUP:
                yield record_batch(rows, schema)
                rows = []
        if rows:
            yield record_batch(rows, schema)

    def _write_parquet(self) -> None:
        import pyarrow.parquet as pq

        schema = self.schema()
        try:
            # pyarrow writes into the private temporary file atomic_file opened: it never opens a name itself.
            with atomic_file(self.out) as f, pq.ParquetWriter(f, schema) as writer:
                for batch in self._batches(schema):
                    writer.write_batch(batch)
        except OSError as exc:  # a full disk: the journal keeps every row
            raise output_failure(self.out, exc, then=f"every row is kept in {self.path}: rerun with --resume "
                                                     "once there is room") from None

