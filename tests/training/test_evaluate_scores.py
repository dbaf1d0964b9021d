"""``facialattr evaluate MODEL DATA --scores X.jsonl`` where MODEL is a Triton model repository folder.

The scores file is written by the client's own JSONL writer (the file ``facialattr score --out
X.jsonl`` leaves, error rows and walk order included) for a synthetic CelebA val split; the
figures the command reports are checked against labels, scores and thresholds worked out here
with plain numpy, the thresholds read straight out of ``config.pbtxt``'s text.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facialattr import MODEL_NAME
from facialattr.app.cli import main
from facialattr.client.batching import ItemResult
from facialattr.client.results import JsonlWriter
from facialattr.client.rows import RowMaker
from facialattr.contract import ModelContract
from facialattr.errors import EXIT_FATAL, EXIT_OK, ErrorKind
from facialattr.repository import write_model
from facialattr.training.data import load_celeba

SHIPPED_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
SHIPPED_MODEL = SHIPPED_REPOSITORY / MODEL_NAME

# The real command in a real process that cannot import TensorFlow (find_spec returns None, import raises).
_RUN_WITHOUT_TENSORFLOW = ("import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
                           "from facialattr.app.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, celeba_factory) -> Path:
    return celeba_factory(tmp_path_factory.mktemp("celeba"), n_train=8, n_val=40)


@pytest.fixture(scope="module")
def val(data_dir):
    split = load_celeba(data_dir)["val"]
    # Every attribute has both classes, so balanced accuracy below is the plain mean of the two rates.
    assert np.all(split.labels.any(0)) and np.all((1 - split.labels).any(0))
    return split


@pytest.fixture(scope="module")
def probabilities(val) -> np.ndarray:
    """Scores that follow the labels loosely, so thresholds and 0.5 give different answers."""
    rng = np.random.default_rng(7)
    return (0.35 * val.labels + 0.65 * rng.random(val.labels.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory, val, probabilities) -> Path:
    path = tmp_path_factory.mktemp("scores") / "val.jsonl"
    contract = ModelContract()
    writer, rows = JsonlWriter(path, contract), RowMaker(contract)
    writer.open(resume=False)
    # score walks folders in its own order and records a file it cannot decode as an error row.
    for i in reversed(range(len(val))):
        writer.write(rows.row(ItemResult(str(val.paths[i]), probabilities[i])))
    writer.write(rows.row(ItemResult(str(val.paths[0].with_name("notes.jpg")), error="not an image",
                                     error_kind=ErrorKind.INPUT)))
    writer.close(complete=True)
    return path


def config_thresholds(config_pbtxt: Path) -> np.ndarray:
    text = config_pbtxt.read_text()
    (values,) = re.findall(r'key: "thresholds"\s*value \{\s*string_value: "([^"]+)"', text)
    return np.array([float(v) for v in values.split(",")])


def expected_means(labels: np.ndarray, scores: np.ndarray, thresholds) -> tuple[float, float]:
    """(mean accuracy, mean balanced accuracy) over attributes at ``thresholds``."""
    positive, predicted = labels.astype(bool), scores >= np.asarray(thresholds)
    accuracy = (predicted == positive).mean(0)
    tpr = (predicted & positive).sum(0) / positive.sum(0)
    tnr = (~predicted & ~positive).sum(0) / (~positive).sum(0)
    return float(accuracy.mean()), float(((tpr + tnr) / 2).mean())


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("model", [SHIPPED_MODEL, SHIPPED_MODEL / "1"], ids=["model_folder", "version_folder"])
def test_served_scores_are_evaluated_with_the_shipped_config_thresholds_without_tensorflow(
        model, data_dir, val, probabilities, scores_file, tmp_path):
    repository_before = files_under(SHIPPED_REPOSITORY)
    run = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_TENSORFLOW, "evaluate", str(model), str(data_dir),
                          "--scores", str(scores_file)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == EXIT_OK, run.stderr

    out = tmp_path / f"evaluation_{MODEL_NAME}_v1_val"  # the current folder: the repository is the server's
    result = json.loads((out / "metrics.json").read_text())
    assert json.loads(run.stdout) == result["summary"]
    assert result["summary"]["thresholds"] == f"shipped thresholds from {SHIPPED_MODEL / 'config.pbtxt'}"
    assert result["summary"]["data"] == f"{data_dir} val: 40 images"
    thresholds = config_thresholds(SHIPPED_MODEL / "config.pbtxt")
    accuracy_at_half, balanced_at_half = expected_means(val.labels, probabilities, 0.5)
    accuracy_at_thresholds, balanced_at_thresholds = expected_means(val.labels, probabilities, thresholds)
    assert balanced_at_thresholds != pytest.approx(balanced_at_half, abs=1e-3)  # the thresholds are what is tested
    assert result["means"]["at_0.5"]["accuracy"] == pytest.approx(accuracy_at_half, abs=1e-9)
    assert result["means"]["at_0.5"]["balanced_accuracy"] == pytest.approx(balanced_at_half, abs=1e-9)
    assert result["means"]["at_thresholds_in_sample"]["accuracy"] == pytest.approx(accuracy_at_thresholds, abs=1e-9)
    assert result["means"]["at_thresholds_in_sample"]["balanced_accuracy"] == pytest.approx(balanced_at_thresholds, abs=1e-9)
    assert result["summary"]["mean_accuracy_at_0.5"] == round(accuracy_at_half, 4)
    assert result["summary"]["mean_balanced_accuracy_at_thresholds"] == round(balanced_at_thresholds, 4)
    assert "| **mean** |" in (out / "metrics.md").read_text()
    assert files_under(SHIPPED_REPOSITORY) == repository_before


@pytest.fixture(scope="module")
def two_version_repository(tmp_path_factory) -> Path:
    """Version 1 exported with thresholds 0.3, version 2 with 0.7: config.pbtxt holds version 2's contract,
    version 1 keeps its own contract.json as export leaves it for rollback. (The ONNX files are never run.)"""
    root = tmp_path_factory.mktemp("repository")
    onnx = root / "weights.onnx"
    onnx.write_bytes(b"not run by evaluate")
    for version, threshold in ((1, 0.3), (2, 0.7)):
        contract = ModelContract(thresholds=(threshold,) * 40)
        folder = write_model(root / "repository", onnx, contract, version=version)
        (folder / "contract.json").write_text(json.dumps(contract.to_parameters()))
    return root / "repository" / MODEL_NAME


@pytest.mark.parametrize("version,threshold,contract_file", [
    (None, 0.7, "config.pbtxt"),
    ("2", 0.7, "config.pbtxt"),
    ("1", 0.3, "1/contract.json"),
], ids=["model_folder_is_the_latest", "latest_version_folder", "older_version_has_its_own_contract"])
def test_each_version_is_evaluated_with_its_own_thresholds(
        two_version_repository, version, threshold, contract_file, data_dir, val, probabilities, scores_file, tmp_path):
    model = two_version_repository / version if version else two_version_repository
    assert main(["evaluate", str(model), str(data_dir), "--scores", str(scores_file), "--out", str(tmp_path)]) == EXIT_OK
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert summary["thresholds"] == f"shipped thresholds from {two_version_repository / contract_file}"
    assert summary["model"] == f"served scores in {scores_file} ({MODEL_NAME} version {version or 2}, 128x128 input)"
    _, balanced = expected_means(val.labels, probabilities, threshold)
    assert summary["mean_balanced_accuracy_at_thresholds"] == round(balanced, 4)


@pytest.mark.parametrize("model,scores,message", [
    (SHIPPED_MODEL, False, "is a Triton model repository folder (ONNX, no Keras model to run): evaluate the served "
                           "model's probabilities with --scores X.jsonl"),
    (SHIPPED_MODEL / "1", False, "or pass a training run folder or model.keras"),
    (SHIPPED_REPOSITORY, True, f"is a model repository: pass one of its model folders, e.g. {SHIPPED_MODEL}"),
    ("two_version:3", True, "no version 3 (has 1, 2)"),
    ("two_version:older_without_contract", True, "version 1's thresholds are unknown"),
], ids=["model_folder_without_scores", "version_folder_without_scores", "repository_root", "absent_version",
        "older_version_without_contract"])
def test_a_repository_folder_that_cannot_be_evaluated_fails_with_what_to_pass_and_writes_nothing(
        model, scores, message, two_version_repository, data_dir, scores_file, tmp_path, monkeypatch, caplog):
    if model == "two_version:3":
        model = two_version_repository / "3"
    elif model == "two_version:older_without_contract":
        copy = shutil.copytree(two_version_repository, tmp_path / "copy" / MODEL_NAME)
        (copy / "1" / "contract.json").unlink()
        model = copy / "1"
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    args = ["evaluate", str(model), str(data_dir), *(["--scores", str(scores_file)] if scores else [])]
    with caplog.at_level(logging.ERROR):
        assert main(args) == EXIT_FATAL
    assert message in caplog.text
    assert files_under(tmp_path) == before
