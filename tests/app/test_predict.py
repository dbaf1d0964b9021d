"""``facialattr predict`` against the real embedded Triton: the table, --json, bad inputs, no server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from testsupport import free_ports

from facialattr import defaults, repository
from facialattr.app.cli import main
from facialattr.app.predict import GIVE_UP_AFTER_S
from facialattr.client.ranking import top_attributes
from facialattr.errors import EXIT_FATAL, EXIT_NO_INPUTS, EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE


@pytest.fixture(scope="module")
def faces(tmp_path_factory, make_jpegs):
    return make_jpegs(tmp_path_factory.mktemp("faces"), 3)


@pytest.fixture(scope="module")
def contract(tiny_repository):
    return repository.load_model(tiny_repository).contract


def test_one_image_prints_a_table_of_its_top10_ranked_like_score_with_onnx_runtime_probabilities(
        faces, grpc_url, reference, contract):
    proc = subprocess.run([sys.executable, "-m", "facialattr.app.cli", "predict", str(faces[0]), "--url", grpc_url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_OK, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == str(faces[0])
    assert lines[1].split() == ["rank", "attribute", "probability", "present", "lift"]
    rows = [line.split() for line in lines[2:]]
    expected = top_attributes(reference([faces[0]])[str(faces[0])], contract, k=10)
    assert [r[1] for r in rows] == [a.name for a in expected]
    assert [int(r[0]) for r in rows] == list(range(1, 11))
    np.testing.assert_allclose([float(r[2]) for r in rows], [a.probability for a in expected], atol=1e-3)
    assert [r[3] for r in rows] == ["yes" if a.present else "no" for a in expected]


def test_json_has_one_entry_per_input_in_order_and_bad_inputs_are_named_errors(
        tmp_path, faces, grpc_url, reference, contract, capsys):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a picture")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(faces[1].read_bytes()[:200])
    missing = tmp_path / "missing.jpg"
    args = [str(faces[1]), str(not_an_image), str(missing), str(truncated), str(faces[2])]

    assert main(["predict", *args, "--json", "--top", "3", "--url", grpc_url]) == EXIT_SOME_INPUTS_FAILED
    entries = json.loads(capsys.readouterr().out)

    assert [e["path"] for e in entries] == args
    assert [e["status"] for e in entries] == ["ok", "error", "error", "error", "ok"]
    assert [e.get("error_kind") for e in entries[1:4]] == ["unsupported_format", "not_found", "corrupt"]
    for entry in entries[1:4]:
        assert entry["path"] in entry["error"]
    for entry, face in ((entries[0], faces[1]), (entries[4], faces[2])):
        expected = top_attributes(reference([face])[str(face)], contract, k=3)
        assert [t["attribute"] for t in entry["top"]] == [a.name for a in expected]
        assert [t["present"] for t in entry["top"]] == [a.present for a in expected]
        np.testing.assert_allclose([t["probability"] for t in entry["top"]], [a.probability for a in expected], atol=1e-3)


def test_table_shows_the_error_of_a_missing_file_under_its_name(tmp_path, grpc_url, capsys):
    missing = tmp_path / "gone.jpg"
    assert main(["predict", str(missing), "--url", grpc_url]) == EXIT_SOME_INPUTS_FAILED
    out = capsys.readouterr()
    assert out.out.splitlines() == [str(missing), f"  error (not_found): {missing}: no such file"]
    assert "1 of 1 inputs failed" in out.err


def test_no_server_exits_fatal_at_once_with_a_hint_to_start_one(faces, caplog):
    url = f"127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    assert main(["predict", str(faces[0]), "--url", url]) == EXIT_FATAL
    assert time.monotonic() - started < 5, "a refused connection is an answer: no 10 s wait"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(url in m and "facialattr serve" in m for m in errors), errors


def test_a_folder_without_images_warns_and_exits_with_the_no_inputs_status(tmp_path, grpc_url, caplog):
    (tmp_path / "readme.txt").write_text("no pictures here")
    assert main(["predict", str(tmp_path), "--url", grpc_url]) == EXIT_NO_INPUTS
    assert any("no images found" in r.getMessage() and str(tmp_path) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("flag", [["--top", "0"], ["--timeout", "0"], ["--connect-timeout", "0"], ["--give-up-after", "-1"],
                                  ["--max-in-flight", "0"]])
def test_nonsense_options_are_usage_errors_naming_the_flag_before_connecting(faces, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(faces[0]), "--url", "127.0.0.1:1", *flag])
    assert exit_.value.code == EXIT_USAGE
    assert f"argument {flag[0]}" in capsys.readouterr().err


def test_predict_gives_up_on_a_server_that_went_away_sooner_than_score_and_says_so(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"stop when a server that answered stays unreachable this long (default: {GIVE_UP_AFTER_S})" in text
    assert GIVE_UP_AFTER_S < defaults.GIVE_UP_AFTER_S

