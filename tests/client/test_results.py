"""Result files: torn tails dropped, resume sets, refusal of foreign files, parquet journal (pure file units)."""

from __future__ import annotations

import numpy as np
import pytest
from facialattr.client.batching import ItemResult
from facialattr.client.parquet_out import ParquetWriter
from facialattr.client.results import drop_torn_tail, make_row, open_writer

from facialattr.contract import ModelContract
from facialattr.errors import InputError

CONTRACT = ModelContract()


def _ok(path: str) -> ItemResult:
    return ItemResult(path, probabilities=np.linspace(0.01, 0.99, 40, dtype=np.float32))


@pytest.mark.parametrize("content,expected", [
    (b"", b""),
    (b"a\nb\n", b"a\nb\n"),
    (b"a\nb\npart", b"a\nb\n"),
    (b"only-part", b""),
])
def test_drop_torn_tail_keeps_only_complete_lines(tmp_path, content, expected):
    path = tmp_path / "f"
    path.write_bytes(content)
    assert drop_torn_tail(path) == (content != expected)
    assert path.read_bytes() == expected


def test_rows_hold_exact_float32_probabilities_flags_and_top10():
    row = make_row(_ok("x.jpg"), CONTRACT)
    p = np.linspace(0.01, 0.99, 40, dtype=np.float32)
    assert [row[n] for n in CONTRACT.attribute_names] == p.tolist()  # float32 values, exactly
    assert row["Young_present"] is True and row["5_o_Clock_Shadow_present"] is False
    assert len(row["top10"]) == 10 and row["status"] == "ok"


def test_error_rows_keep_the_message_on_one_line():
    row = make_row(ItemResult("x.jpg", error="x.jpg: bad\nreally bad", error_kind="corrupt"), CONTRACT)
    assert row["error"] == "x.jpg: bad really bad" and row["status"] == "error" and row["Young"] is None


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_resume_knows_which_paths_are_done(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    writer = open_writer(out, CONTRACT)
    for name in ("a.jpg", "b.jpg"):
        writer.write(make_row(_ok(name), CONTRACT))
    writer.close(complete=suffix != ".parquet")  # parquet: interrupted, the journal stays
    assert open_writer(out, CONTRACT, resume=True).done == {"a.jpg", "b.jpg"}


def test_finished_parquet_is_extended_on_resume(tmp_path):
    out = tmp_path / "r.parquet"
    writer = open_writer(out, CONTRACT)
    writer.write(make_row(_ok("a.jpg"), CONTRACT))
    writer.close(complete=True)
    assert not ParquetWriter.journal_for(out).exists()
    writer = open_writer(out, CONTRACT, resume=True)
    assert writer.done == {"a.jpg"}
    writer.write(make_row(_ok("b.jpg"), CONTRACT))
    writer.close(complete=True)
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("path").to_pylist() == ["a.jpg", "b.jpg"]


def test_resuming_a_file_with_other_columns_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("path,status,something_else\n")
    with pytest.raises(InputError, match="columns differ"):
        open_writer(out, CONTRACT, resume=True)


@pytest.mark.parametrize("name", ["r.txt", "r"])
def test_unknown_output_formats_are_refused(tmp_path, name):
    with pytest.raises(InputError, match=".csv, .jsonl or .parquet"):
        open_writer(tmp_path / name, CONTRACT)


def test_parquet_keeps_a_non_utf8_file_name_exactly_and_resumes_on_it(tmp_path):
    import os

    import pyarrow.parquet as pq

    name = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8
    out = tmp_path / "r.parquet"
    writer = open_writer(out, CONTRACT)
    writer.write(make_row(_ok(name), CONTRACT))
    writer.write(make_row(ItemResult(name + "2", error=f"{name}2: corrupt", error_kind="corrupt"), CONTRACT))
    writer.close(complete=True)
    table = pq.read_table(out)
    assert table.column("path_bytes").to_pylist() == [b"caf\xe9-\xff.jpg", b"caf\xe9-\xff.jpg2"]
    assert table.column("path").to_pylist()[0] == "caf\ufffd-\ufffd.jpg"
    assert open_writer(out, CONTRACT, resume=True).done == {name, name + "2"}
