"""docs/SCORING.md's library example runs as written against a real server (only its URL replaced)."""

from __future__ import annotations

import csv

from testsupport import doc_block

from facialattr.contract import CELEBA_ATTRIBUTES

DOC = "SCORING.md"
DOCUMENTED_URLS = 'urls=("127.0.0.1:8001",)'
N_PHOTOS = 5


def test_the_scoring_library_example_scores_a_folder_predicts_one_photo_and_infers_a_batch(
        triton_server, make_jpegs, tmp_path, monkeypatch, capsys):
    snippet = doc_block(DOC, "python")
    assert snippet.count(DOCUMENTED_URLS) == 1
    snippet = snippet.replace(DOCUMENTED_URLS, f"urls=({triton_server.config.grpc_url!r},)")
    photos = make_jpegs(tmp_path / "photos", N_PHOTOS - 1)
    photos[0].rename(tmp_path / "photos" / "face.jpg")
    make_jpegs(tmp_path / "photos" / "more", 1, seed=1)  # the folder is scored recursively
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, DOC, "exec"), {})
    printed = capsys.readouterr().out
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_PHOTOS and all(row["status"] == "ok" for row in rows)
    table = printed[printed.index("face.jpg"):]  # predict's table for the one photo
    assert sum(name in table for name in CELEBA_ATTRIBUTES) >= 10  # its top 10
    assert printed.rstrip().endswith(f"({N_PHOTOS - 1}, {len(CELEBA_ATTRIBUTES)})")
