"""``score --server-decode`` and ``predict --server-decode`` on the shipped repository: the rows client decoding writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testsupport import start_server

from facialattr.app.cli import main
from facialattr.client.scorer import Scorer
from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import EXIT_FATAL, EXIT_SOME_INPUTS_FAILED

SHIPPED = Path(__file__).resolve().parents[2] / "model_repository"


@pytest.fixture(scope="module")
def shipped_url():
    # The repository `make quickstart` serves: both the pixel model and its bytes twin.
    server = start_server(SHIPPED)
    yield server.config.grpc_url
    server.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_jpegs) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    paths = make_jpegs(root, 10)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.open(paths[0]).save(root / "rotated.jpg", exif=exif)
    Image.open(paths[1]).save(root / "lossless.png")
    (root / "broken.jpg").write_bytes(paths[2].read_bytes()[:300])
    (root / "notes.jpg").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    return root


def rows_of(out: Path) -> dict[str, dict]:
    with open(out, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def test_score_with_server_decode_writes_the_rows_client_decoding_writes(shipped_url, folder, tmp_path):
    runs = {}
    for mode, extra in (("client", []), ("server", ["--server-decode"])):
        out = tmp_path / f"{mode}.csv"
        code = main(["score", str(folder), "--out", str(out), "--url", shipped_url, "--no-progress", *extra])
        assert code == EXIT_SOME_INPUTS_FAILED  # the three broken files
        runs[mode] = rows_of(out)
    client, server = runs["client"], runs["server"]
    assert sorted(client) == sorted(server) and len(client) == 15
    for path, row in client.items():
        other = server[path]
        assert (row["status"], row["error_kind"], row["error"]) == (other["status"], other["error_kind"], other["error"])
        if row["status"] == "ok":
            a = np.array([float(row[n]) for n in CELEBA_ATTRIBUTES])
            b = np.array([float(other[n]) for n in CELEBA_ATTRIBUTES])
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
            assert row["top10"] == other["top10"]
    assert sum(r["status"] == "error" for r in server.values()) == 3


def test_predict_with_server_decode_prints_what_predict_prints(shipped_url, folder, capsys):
    images = [str(folder / name) for name in ("rotated.jpg", "lossless.png", "notes.jpg")]
    printed = []
    for extra in ([], ["--server-decode"]):
        assert main(["predict", *images, "--json", "--url", shipped_url, *extra]) == EXIT_SOME_INPUTS_FAILED
        printed.append(json.loads(capsys.readouterr().out))
    assert printed[0] == printed[1]


def test_server_decode_batches_are_cut_by_bytes_and_keep_row_order(shipped_url, folder):
    files = sorted(folder.glob("img*.jpg"))
    with Scorer(shipped_url) as pixels, Scorer(shipped_url, server_decode=True) as scorer:
        scorer.max_message_bytes = 3 * max(p.stat().st_size for p in files)  # a few files per request
        answer = scorer.infer([p.read_bytes() for p in files])
        from facialattr.client.preprocess import load_and_prepare

        reference = pixels.infer(np.stack([load_and_prepare(p, pixels.contract.preprocessing) for p in files]))
    assert scorer.stats.requests > 3 and answer.error_kinds == ("",) * len(files)
    np.testing.assert_allclose(answer.probabilities, reference, rtol=0, atol=1e-5)


def test_server_decode_against_a_repository_without_the_twin_says_so(grpc_url, folder, tmp_path, caplog):
    code = main(["score", str(folder), "--out", str(tmp_path / "x.csv"), "--url", grpc_url, "--server-decode"])
    assert code == EXIT_FATAL
    assert "facial_attributes_bytes" in caplog.text and "drop --server-decode" in caplog.text
