"""The bad-input corpus through the real ``facialattr score`` process, in each output format.

The run must finish with exit status 3 (some inputs failed), and the result file
must hold one row per corpus file with the status the table expects, including
the file whose name is not UTF-8, written so that its path reads back byte for byte.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import reliability_corpus as corpus
import reliability_support as support

EXIT_SOME_INPUTS_FAILED = 3
# Rows the CLI cannot exercise: nothing deletes a file between its listing and its reading.
NOT_FOR_THE_CLI = {row.kind for row in corpus.TABLE if row.deleted_after_listing}
# The CLI reports an unlistable over-long folder as one error row for the folder, not for the file
# inside it (test_bad_inputs.py checks that row through the library).
NOT_FOR_THE_CLI.add("path longer than PATH_MAX")


def read_rows(out: Path) -> list[dict]:
    """Rows with ``path`` as bytes, the way the file system knows it."""
    if out.suffix == ".csv":
        with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = list(csv.DictReader(f))
    elif out.suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
        for row in rows:  # Parquet strings are UTF-8: the exact name is in path_bytes
            row["path"] = row.pop("path_bytes")
        return rows
    for row in rows:
        row["path"] = os.fsencode(row["path"])
    return rows


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cli-corpus")
    corpus.build(base / "scored", outside=base / "outside")
    return base / "scored"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_score_command_writes_one_row_per_bad_input_and_exits_3(suffix, corpus_root, own_server, tmp_path):
    out = tmp_path / f"corpus{suffix}"
    fifos = [os.path.join(os.fsencode(corpus_root), row.name) for row in corpus.TABLE if row.kind.startswith("FIFO")]
    with support.FifoWatchdog(fifos) as watchdog:
        run = support.run_facialattr("score", corpus_root, "--recursive", "--out", out, "--no-progress",
                                     "--url", own_server.config.grpc_url, timeout_s=120)
    assert not watchdog.opened, "the score command opened a FIFO for reading"
    assert run.returncode == EXIT_SOME_INPUTS_FAILED, run.stderr
    rows = {row["path"]: row for row in read_rows(out)}
    root = os.fsencode(corpus_root)
    mismatches = []
    for row in corpus.TABLE:
        if row.kind in NOT_FOR_THE_CLI or corpus.skip_reason(row):
            continue
        got = rows.get(os.path.join(root, row.name))
        status = got["status"] if got else "missing"
        if status != row.status or (row.status == corpus.ERROR and row.reason.lower() not in got["error"].lower()):
            mismatches.append(f"{row.kind}: expected {row.status} {row.reason!r}, got {status} {got and got['error']!r}")
    assert not mismatches, "\n".join(mismatches)

