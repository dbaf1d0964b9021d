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
    assert "more rows" not in printed  # eight images: the whole table


def test_a_big_folder_s_table_shows_the_first_scored_and_failed_images_and_points_to_the_rest(
        tmp_path, triton_server, make_jpegs):
    from facialattr.client.bulk import score_paths
    from facialattr.client.settings import ScorerSettings

    folder = tmp_path / "faces"
    faces = make_jpegs(folder, 25, size_hw=(48, 40), prefix="face")
    for i in range(23):
        (folder / f"zz_broken{i:02d}.jpg").write_text("not a picture")  # after every good one in name order
    out = tmp_path / "results.csv"
    summary = score_paths([folder], out=out, settings=ScorerSettings(urls=(triton_server.config.grpc_url,)),
                          progress=False)
    assert (summary.scored, summary.failed) == (25, 23)
    lines = format_table(out, max_rows=20).splitlines()
    shown = lines[1:-1]
    assert [line.split()[0] for line in shown] == [p.name for p in faces[:20]] + \
        [f"zz_broken{i:02d}.jpg" for i in range(20)]
    assert all(line.split()[1] == "error" for line in shown[20:])
    assert lines[-1] == f"... 8 more rows (5 scored, 3 failed) in {out}"


def test_demo_with_url_scores_through_a_running_server_and_tables_every_output_format_alike(
        tmp_path, triton_server, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = {}
    for suffix in (".csv", ".jsonl", ".parquet"):
        out = tmp_path / f"results{suffix}"
        assert main(["demo", "--url", triton_server.config.grpc_url, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        tables[suffix] = format_table(out)
        assert tables[suffix] in printed and "7 scored, 1 failed" in printed
    assert "*" in tables[".csv"]  # present flags are shown, whatever the file holds them as
    assert tables[".jsonl"].replace(".jsonl", ".csv") == tables[".csv"]
    assert tables[".parquet"].replace(".parquet", ".csv") == tables[".csv"]
