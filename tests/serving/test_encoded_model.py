"""The bytes model (facial_attributes_bytes) on the real embedded Triton: same answers, per-row errors, the docs' calls."""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testsupport import DOCS, doc_block, make_tiny_repository, start_server

from facialattr import encoded, repository
from facialattr.client.preprocess import load_and_prepare
from facialattr.contract import ModelContract
from facialattr.onnx_runtime import cpu_session
from facialattr.serving.encoded_model import decode_rows, row_outputs

DOC = DOCS / "SERVER_DECODE.md"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_tiny_repository(tmp_path_factory.mktemp("bytes"))
    repository.write_encoded_model(repo, repository.load_model(repo).contract)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    server = start_server(repo, allow_http=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        coarse = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
        paths.append(folder / f"img{i}.jpg")
        Image.fromarray(coarse).resize((89, 109), Image.BICUBIC).save(paths[-1], quality=92)
    # A PNG and an EXIF-rotated JPEG: the server must apply what the client applies.
    Image.open(paths[0]).save(folder / "face.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(paths[1]).save(folder / "rotated.jpg", exif=exif, quality=90)
    return [*paths, folder / "face.png", folder / "rotated.jpg"]


def expected(repo: Path, paths) -> np.ndarray:
    entry = repository.load_model(repo)
    batch = np.stack([load_and_prepare(p, entry.contract.preprocessing) for p in paths])
    return cpu_session(entry.onnx_path()).run(["probabilities"], {"images": batch})[0]


def infer_bytes(server, rows: list[bytes]):
    import tritonclient.grpc as grpcclient

    array = np.empty((len(rows), 1), np.object_)
    array[:, 0] = rows
    inp = grpcclient.InferInput(encoded.INPUT_NAME, list(array.shape), "BYTES")
    inp.set_data_from_numpy(array)
    with grpcclient.InferenceServerClient(server.config.grpc_url) as client:
        result = client.infer(encoded.encoded_model_name(), [inp])
    kinds = [k.decode() for k in result.as_numpy(encoded.ERROR_KIND_NAME)[:, 0]]
    errors = [e.decode() for e in result.as_numpy(encoded.ERROR_NAME)[:, 0]]
    return result.as_numpy(encoded.OUTPUT_NAME), kinds, errors


def bomb_png() -> bytes:
    """A small PNG whose header declares 10,000 x 10,000 pixels: over the 50-megapixel limit."""
    out = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(out, format="PNG")
    return out.getvalue()


def test_the_bytes_model_answers_what_the_pixel_model_answers_for_the_clients_decoding(server, repo, faces):
    probabilities, kinds, errors = infer_bytes(server, [p.read_bytes() for p in faces])
    assert kinds == [""] * len(faces) and errors == [""] * len(faces)
    np.testing.assert_allclose(probabilities, expected(repo, faces), rtol=0, atol=1e-6)


def truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()[:-200]


BAD_ROWS = [
    (b"", "empty"),
    (b"plain text, no image", "unsupported_format"),
    (truncated_jpeg(), "corrupt"),
    (bomb_png(), "too_large"),
]


def test_a_bad_image_costs_its_own_row_only_and_says_why(server, repo, faces):
    good = [p.read_bytes() for p in faces[:2]]
    rows = [good[0], *[data for data, _ in BAD_ROWS], good[1]]
    probabilities, kinds, errors = infer_bytes(server, rows)
    assert kinds == ["", *[kind for _, kind in BAD_ROWS], ""]
    assert all(errors[1:-1]) and not errors[0] and not errors[-1]
    np.testing.assert_allclose(probabilities[[0, -1]], expected(repo, faces[:2]), rtol=0, atol=1e-6)
    assert not probabilities[1:-1].any()


def test_each_bad_rows_kind_goes_out_as_the_bytes_of_its_name_without_a_server():
    images, errors = decode_rows([data for data, _ in BAD_ROWS], ModelContract().preprocessing)
    _, kinds, reasons = row_outputs(images, errors, run=None, num_attributes=ModelContract().num_attributes)
    assert kinds.dtype == np.object_ and kinds[:, 0].tolist() == [kind.encode() for _, kind in BAD_ROWS]
    assert all(isinstance(reason, bytes) and reason for reason in reasons[:, 0])


def test_requests_merged_with_a_bad_one_are_scored(server, repo, faces):
    # Concurrent requests share the dynamic batcher's batches with the broken ones.
    good = faces[0].read_bytes()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: infer_bytes(server, [good] if i % 2 else [b"broken"]), range(32)))
    reference = expected(repo, faces[:1])
    for i, (probabilities, kinds, _) in enumerate(answers):
        if i % 2:
            assert kinds == [""]
            np.testing.assert_allclose(probabilities, reference, rtol=0, atol=1e-6)
        else:
            assert kinds == ["unsupported_format"]


def test_the_documented_curl_call_scores_a_file(server, repo, faces, tmp_path):
    script = doc_block(DOC.name, "bash", 1)
    script = script.replace("URL=http://127.0.0.1:8000", f"URL={server.config.http_url}")
    script = script.replace("IMAGE=face.jpg", f"IMAGE={faces[0]}")
    assert script.count(server.config.http_url) == 1 and str(faces[0]) in script
    if shutil.which("curl"):
        answer = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=60).stdout
    else:  # the same request body, sent with urllib
        data = faces[0].read_bytes()
        header = re.search(r"HEADER=\"(.*)\"\n", script)[1].replace('\\"', '"').replace("$((N + 4))", str(len(data) + 4))
        request = urllib.request.Request(
            f"{server.config.http_url}/v2/models/facial_attributes_bytes/infer", method="POST",
            data=header.encode() + len(data).to_bytes(4, "little") + data,
            headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
        answer = urllib.request.urlopen(request, timeout=60).read()
    outputs = {o["name"]: o["data"] for o in json.loads(answer)["outputs"]}
    assert outputs["error_kind"] == [""] and outputs["error"] == [""]
    np.testing.assert_allclose(outputs["probabilities"], expected(repo, faces[:1])[0], rtol=0, atol=1e-6)


def test_the_documented_tritonclient_snippet_runs_as_written(server, faces, capsys, monkeypatch):
    snippet = doc_block(DOC.name, "python").replace("127.0.0.1:8001", server.config.grpc_url)
    monkeypatch.chdir(faces[0].parent)
    shutil.copyfile(faces[0], faces[0].parent / "face.jpg")
    exec(compile(snippet, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("b''") and "[" in printed


def test_the_shipped_repository_has_a_bytes_twin_in_step_with_its_pixel_model():
    shipped = Path(__file__).resolve().parents[2] / "model_repository"
    twin = repository.load_encoded_model(shipped)
    assert twin.contract == repository.load_model(shipped).contract
    assert (twin.path / "1" / encoded.MODEL_FILENAME).read_text() == encoded.MODEL_SOURCE
