"""The quick start's library path: sample photos scored by the real embedded Triton into a table."""

from __future__ import annotations

import csv

from testsupport import make_tiny_repository

from facialattr.app.cli import main
from facialattr.app.demo import format_table


def test_demo_scores_sample_photos_prints_a_table_and_keeps_the_broken_one_as_an_error_row(tmp_path, monkeypatch, capsys):
    repo = make_tiny_repository(tmp_path / "model", size_hw=(64, 64))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.csv"
    code = main(["demo", "--out", str(out), "--model-repository", str(repo), "--grpc-port", "0", "--metrics-port", "0"])
    assert code == 0
    with open(out, newline="") as f:
        rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert len(rows) == 8
    assert rows["broken_download.jpg"]["status"] == "error"
    assert all(r["status"] == "ok" for name, r in rows.items() if name != "broken_download.jpg")
    printed = capsys.readouterr().out
    assert "PLACEHOLDER" not in printed  # the tiny test model carries no placeholder flag
    assert format_table(out) in printed
    assert "astronaut_face.jpg" in printed and "7 scored, 1 failed" in printed
