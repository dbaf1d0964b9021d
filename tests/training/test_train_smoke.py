"""Smoke runs of ``facialattr train`` on a synthetic CelebA whose pixels carry three attributes.

One small run (64 px, MobileNetV2 alpha 0.35 from random init, a few epochs on the
cached-backbone schedule) is shared by the tests below; a second call in the same
run directory with more epochs must continue, not restart.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from facialattr.app.cli import main
from facialattr.contract import CELEBA_ATTRIBUTES, ModelContract

LEARNABLE = ("Bangs", "Male", "Goatee")
SMOKE_CONFIG = {
    "size_hw": [64, 64], "alpha": 0.35, "weights": None, "split_layer": "block_2_add", "dropout": 0.0,
    "head_epochs": 4, "head_lr": 0.03, "finetune_epochs": 2, "finetune_lr": 0.001, "batch_size": 16, "patience": 10,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, celeba_factory) -> Path:
    return celeba_factory(tmp_path_factory.mktemp("celeba"), n_train=128, n_val=48)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    config = run_dir.parent / "smoke.yaml"
    config.write_text(yaml.safe_dump(SMOKE_CONFIG))
    assert main(["train", str(data_dir), "--config", str(config), "--out", str(run_dir)]) == 0
    return run_dir


def _history(run_dir: Path, phase: str) -> list[dict]:
    with (run_dir / f"history_{phase}.csv").open() as f:
        return list(csv.DictReader(f))


def test_loss_falls_and_learnable_attributes_beat_chance(run):
    rows = _history(run, "head") + _history(run, "finetune")
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    tables = json.loads((run / "metrics.json").read_text())["tables"]["at_0.5"]["per_attribute"]
    aucs = {name: tables[name]["roc_auc"] for name in LEARNABLE}
    assert min(aucs.values()) > 0.55 and np.mean(list(aucs.values())) > 0.7, aucs


def test_run_dir_holds_model_contract_metrics_and_curves(run):
    for name in ("model.keras", "contract.json", "metrics.json", "metrics.md", "config.yaml", "curves.png"):
        assert (run / name).is_file(), name
    contract = ModelContract.from_parameters(json.loads((run / "contract.json").read_text()))
    assert contract.attribute_names == CELEBA_ATTRIBUTES
    assert contract.preprocessing.size_hw == (64, 64)
    assert contract.summary["data"].startswith("CelebA subset: 128 train / 48 val")
    assert abs(contract.priors[CELEBA_ATTRIBUTES.index("Bangs")] - 0.3) < 0.15


def test_saved_model_takes_uint8_images_and_returns_probabilities(run):
    import keras

    model = keras.models.load_model(run / "model.keras", compile=False)
    assert model.input.name == "images" and model.input.dtype == "uint8"
    assert tuple(model.input.shape) == (None, 64, 64, 3) and model.output_names == ["probabilities"]
    out = model.predict(np.zeros((2, 64, 64, 3), np.uint8), verbose=0)
    assert out.shape == (2, 40) and np.all((out >= 0) & (out <= 1))
    scores = np.load(run / "val_scores.npy")  # the cached path's val predictions were stored with the run
    assert scores.shape == (48, 40)


def test_evaluate_scores_the_run_with_its_shipped_thresholds(run, data_dir, tmp_path):
    assert main(["evaluate", str(run), str(data_dir), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["summary"]["thresholds"].startswith("shipped thresholds")
    trained = json.loads((run / "metrics.json").read_text())["means"]["at_0.5"]["roc_auc"]
    assert result["means"]["at_0.5"]["roc_auc"] == pytest.approx(trained, abs=0.02)
    assert "| **mean** |" in (tmp_path / "metrics.md").read_text()


def test_rerun_with_more_epochs_continues_after_the_last_finished_epoch(run, data_dir):
    before = len(_history(run, "finetune"))
    config = run.parent / "more.yaml"
    config.write_text(yaml.safe_dump(dict(SMOKE_CONFIG, finetune_epochs=SMOKE_CONFIG["finetune_epochs"] + 1)))
    assert main(["train", str(data_dir), "--config", str(config), "--out", str(run)]) == 0
    head, finetune = _history(run, "head"), _history(run, "finetune")
    assert len(head) == SMOKE_CONFIG["head_epochs"]  # the finished head phase was not trained again
    assert [int(r["epoch"]) for r in finetune] == list(range(before + 1))
    assert json.loads((run / "checkpoints" / "finetune" / "state.json").read_text())["epoch"] == before


def test_end_to_end_schedule_trains_through_the_images_and_writes_the_same_outputs(data_dir, tmp_path):
    config = tmp_path / "e2e.yaml"
    config.write_text(yaml.safe_dump(dict(SMOKE_CONFIG, schedule="end_to_end", size_hw=[48, 48], head_epochs=1,
                                          finetune_epochs=1, max_train_images=32, max_val_images=16)))
    run_dir = tmp_path / "run"
    assert main(["train", str(data_dir), "--config", str(config), "--out", str(run_dir)]) == 0
    contract = ModelContract.from_parameters(json.loads((run_dir / "contract.json").read_text()))
    assert contract.preprocessing.size_hw == (48, 48)
    assert contract.summary["data"].startswith("CelebA subset: 32 train / 16 val")
    assert not (run_dir / "cache").exists()  # nothing cached on this schedule
    assert len(_history(run_dir, "finetune")) == 1


def _write_score_rows(path: Path, data_dir: Path, scores: np.ndarray, *, drop: int = 0) -> None:
    from facialattr.training.data import load_celeba

    val = load_celeba(data_dir)["val"]
    with path.open("w") as f:
        for image, p in list(zip(val.paths, scores, strict=True))[drop:]:
            f.write(json.dumps({"path": str(image), "status": "ok", **dict(zip(CELEBA_ATTRIBUTES, p.tolist(), strict=True))}) + "\n")


def test_evaluate_from_served_scores_equals_evaluating_the_keras_model(run, data_dir, tmp_path):
    assert main(["evaluate", str(run), str(data_dir), "--out", str(tmp_path / "keras")]) == 0
    keras_result = json.loads((tmp_path / "keras" / "metrics.json").read_text())
    import keras

    from facialattr.training.data import load_celeba
    from facialattr.training.evaluate import predict_split

    model = keras.models.load_model(run / "model.keras", compile=False)
    scores = predict_split(model, load_celeba(data_dir)["val"], (64, 64))
    _write_score_rows(tmp_path / "scores.jsonl", data_dir, scores)
    assert main(["evaluate", str(run), str(data_dir), "--scores", str(tmp_path / "scores.jsonl"),
                 "--out", str(tmp_path / "served")]) == 0
    served = json.loads((tmp_path / "served" / "metrics.json").read_text())
    assert served["summary"]["model"].startswith("served scores in")
    for table, values in keras_result["means"].items():
        assert served["means"][table] == pytest.approx(values), table


def test_evaluate_refuses_a_scores_file_that_misses_images(run, data_dir, tmp_path):
    from facialattr.errors import FacialAttrError
    from facialattr.training.evaluate import evaluate

    _write_score_rows(tmp_path / "partial.jsonl", data_dir, np.full((48, 40), 0.5, np.float32), drop=3)
    with pytest.raises(FacialAttrError, match="3 of 48 images have no ok row"):
        evaluate(run, data_dir, scores_file=tmp_path / "partial.jsonl", out_dir=tmp_path)
