"""Result rows and files: torn tails, resume sets, foreign files, parquet journal, safe CSV cells, reading back,
permissions (file units)."""

from __future__ import annotations

import csv
import json
import os
import stat

import numpy as np
import pyarrow as pa
import pytest

from facialattr import repository
from facialattr.client import sharded_out
from facialattr.client.batching import ItemResult
from facialattr.client.outputs import open_writer
from facialattr.client.parquet_out import ParquetWriter
from facialattr.client.results import drop_torn_tail
from facialattr.client.rows import make_row, parquet_schema, path_from_csv, read_rows, record_batch, row_from_arrow
from facialattr.contract import ModelContract
from facialattr.decoding import DecodeError
from facialattr.errors import ErrorKind, InputError
from facialattr.files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, SHARED_FILE_MODE

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
    row = make_row(ItemResult("x.jpg", error="x.jpg: bad\nreally bad", error_kind=ErrorKind.CORRUPT), CONTRACT)
    assert row["error"] == "x.jpg: bad really bad" and row["status"] == "error" and row["Young"] is None


@pytest.mark.parametrize(("kind", "written"), [(ErrorKind.OUTSIDE_ROOTS, "outside_roots"), (ErrorKind.SERVER, "server"),
                                               (None, "input"), ("a kind of a newer version", "input")])
def test_an_error_rows_kind_is_written_as_its_value_and_an_unknown_one_as_input(kind, written):
    row = make_row(ItemResult("x.jpg", error="x.jpg: failed", error_kind=kind), CONTRACT)
    assert row["error_kind"] == written and type(row["error_kind"]) is str


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
    import pyarrow.parquet as pq

    name = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8
    out = tmp_path / "r.parquet"
    writer = open_writer(out, CONTRACT)
    writer.write(make_row(_ok(name), CONTRACT))
    writer.write(make_row(ItemResult(name + "2", error=f"{name}2: corrupt", error_kind=ErrorKind.CORRUPT), CONTRACT))
    writer.close(complete=True)
    table = pq.read_table(out)
    assert table.column("path_bytes").to_pylist() == [b"caf\xe9-\xff.jpg", b"caf\xe9-\xff.jpg2"]
    assert table.column("path").to_pylist()[0] == "caf\ufffd-\ufffd.jpg"
    assert open_writer(out, CONTRACT, resume=True).done == {name, name + "2"}


# Names a spreadsheet or a naive CSV reader would get wrong: (name as os.fsdecode gives it, what the CSV cell shows).
HOSTILE_NAMES = [
    ("photos/a\rb.jpg", "photos/a\rb.jpg"),
    ("line\nbreak.jpg", "line\nbreak.jpg"),
    ('quote",comma.jpg', 'quote",comma.jpg'),
    ("=HYPERLINK(1).jpg", "'=HYPERLINK(1).jpg"),
    ("+1.jpg", "'+1.jpg"),
    ("-2.jpg", "'-2.jpg"),
    ("@SUM.jpg", "'@SUM.jpg"),
    ("\tTAB.jpg", "'\tTAB.jpg"),
    ("\rCR.jpg", "'\rCR.jpg"),
    ("'=quoted.jpg", "''=quoted.jpg"),
    ("back\\slash.jpg", "back\\\\slash.jpg"),
    (os.fsdecode(b"caf\xe9-\xff.jpg"), "caf\\xe9-\\xff.jpg"),
]


def test_csv_cells_are_quoted_neutralised_and_strict_utf8_and_resume_matches_every_name(tmp_path):
    out = tmp_path / "r.csv"
    writer = open_writer(out, CONTRACT)
    for name, _ in HOSTILE_NAMES:
        writer.write(make_row(_ok(name), CONTRACT))
    writer.close(complete=True)
    with open(out, encoding="utf-8", errors="strict", newline="") as f:  # a strict UTF-8 reader
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [shown for _, shown in HOSTILE_NAMES]
    assert all(r["status"] == "ok" and len(r["top10"].split(";")) == 10 for r in rows)
    assert [path_from_csv(r["path"]) for r in rows] == [name for name, _ in HOSTILE_NAMES]
    assert open_writer(out, CONTRACT, resume=True).done == {name for name, _ in HOSTILE_NAMES}


def test_error_cells_starting_with_a_formula_are_neutralised_in_csv_only(tmp_path):
    result = ItemResult("=cmd.jpg", error="=cmd.jpg: corrupt", error_kind=ErrorKind.CORRUPT)
    for suffix in (".csv", ".jsonl"):
        writer = open_writer(tmp_path / f"r{suffix}", CONTRACT)
        writer.write(make_row(result, CONTRACT))
        writer.close(complete=True)
    with open(tmp_path / "r.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["path"] == "'=cmd.jpg" and row["error"] == "'=cmd.jpg: corrupt"
    (line,) = (tmp_path / "r.jsonl").read_text().splitlines()
    assert json.loads(line)["path"] == "=cmd.jpg" and json.loads(line)["error"] == "=cmd.jpg: corrupt"


def _score_output(suffix: str):
    def write(folder):
        out = folder / f"r{suffix}"
        writer = open_writer(out, CONTRACT)
        writer.write(make_row(_ok("a.jpg"), CONTRACT))
        writer.close(complete=True)
        return out
    return write


def _ray_shard(folder):
    out = sharded_out.open_dataset(folder / "shards", resume=False, overwrite=False)
    batch = record_batch([make_row(_ok("a.jpg"), CONTRACT)], parquet_schema(CONTRACT))
    sharded_out.write_shard(out, 0, pa.Table.from_batches([batch]))
    return sharded_out.shard_file(out, 0)


def _repository_file(name: str):
    def write(folder):
        onnx = folder.parent / "model.onnx"
        onnx.write_bytes(b"copied, not read")
        return repository.write_model(folder / "repo", onnx, CONTRACT).parent / name
    return write


# Every writer of a file, and the mode it must give it: scores are personal data; the model repository
# is read by a server that may run as another user.
OUTPUT_MODES = [
    ("score CSV", _score_output(".csv"), PRIVATE_FILE_MODE),
    ("score JSONL", _score_output(".jsonl"), PRIVATE_FILE_MODE),
    ("score Parquet", _score_output(".parquet"), PRIVATE_FILE_MODE),
    ("Ray shard", _ray_shard, PRIVATE_FILE_MODE),
    ("repository config.pbtxt", _repository_file("config.pbtxt"), SHARED_FILE_MODE),
    ("repository labels.txt", _repository_file("labels.txt"), SHARED_FILE_MODE),
]


@pytest.mark.parametrize("umask", [0o022, 0o077])
@pytest.mark.parametrize(("what", "write", "mode"), OUTPUT_MODES, ids=[row[0] for row in OUTPUT_MODES])
def test_each_output_gets_its_mode_whatever_the_umask_and_leaves_no_lock_or_temporary(tmp_path, umask, what, write,
                                                                                    mode):
    folder = tmp_path / "new"  # made by the writer
    previous = os.umask(umask)
    try:
        path = write(folder)
    finally:
        os.umask(previous)
    assert (path.is_file(), stat.S_IMODE(path.stat().st_mode)) == (True, mode)
    if mode == PRIVATE_FILE_MODE:  # in a private folder too
        assert stat.S_IMODE(path.parent.stat().st_mode) == PRIVATE_DIR_MODE
    assert not list(folder.rglob(".*"))  # no lock, journal or temporary file left


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".ndjson", ".parquet"])
def test_read_rows_gives_back_what_each_format_wrote(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    written = [make_row(_ok("=a.jpg"), CONTRACT),
               make_row(ItemResult.failed(DecodeError("b.jpg", "corrupt", kind=ErrorKind.CORRUPT)), CONTRACT)]
    writer = open_writer(out, CONTRACT)
    for row in written:
        writer.write(row)
    writer.close(complete=True)
    got = list(read_rows(out))
    if suffix == ".csv":  # cells as strings, as CSV holds them
        assert [(r["path"], r["status"], r["error_kind"], r["error"], r["Young"], r["Young_present"]) for r in got] == [
            ("'=a.jpg", "ok", "", "", repr(written[0]["Young"]), "1"), ("b.jpg", "error", "corrupt", "b.jpg: corrupt", "", "")]
        assert got[0]["top10"].split(";") == written[0]["top10"]
    elif suffix == ".parquet":  # typed, with the exact name in path_bytes
        assert [row_from_arrow(r) for r in got] == written
    else:
        assert got == written


def test_read_rows_refuses_a_file_that_is_no_result_format(tmp_path):
    with pytest.raises(InputError, match=".csv, .jsonl or .parquet"):
        read_rows(tmp_path / "r.txt")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
# "inference": rows of runs before server errors were retryable
@pytest.mark.parametrize("kind", [ErrorKind.SERVER, ErrorKind.INFERENCE])
def test_resume_drops_rows_the_server_failed_and_scores_them_again(tmp_path, suffix, kind):
    out = tmp_path / f"r{suffix}"
    writer = open_writer(out, CONTRACT)
    writer.write(make_row(_ok("a.jpg"), CONTRACT))
    writer.write(make_row(ItemResult("b.jpg", error="b.jpg: INTERNAL", error_kind=kind), CONTRACT))
    writer.write(make_row(ItemResult("c.jpg", error="c.jpg: corrupt", error_kind=ErrorKind.CORRUPT), CONTRACT))
    writer.close(complete=True)
    writer = open_writer(out, CONTRACT, resume=True)
    assert writer.done == {"a.jpg", "c.jpg"}
    writer.write(make_row(_ok("b.jpg"), CONTRACT))
    writer.close(complete=True)
    rows = read_rows(out)
    assert sorted((r["path"], r["status"]) for r in rows) == [("a.jpg", "ok"), ("b.jpg", "ok"), ("c.jpg", "error")]
