"""``loss.undo_weighting``: weighted BCE's upward push on probabilities is taken back out of the head's logits."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import yaml

from facialattr.app.cli import main
from facialattr.contract import ModelContract
from facialattr.errors import FacialAttrError
from facialattr.training.losses import LossSpec, logit_shift, positive_weights, shift_probabilities


@pytest.mark.parametrize(("true_p", "weight"), [(0.02, 20.0), (0.3, 2.0), (0.5, 1.0), (0.9, 0.25), (0.999, 1.5)])
def test_the_weighted_optimum_shifted_by_minus_log_weight_is_the_true_probability(true_p, weight):
    # Weighted BCE's minimiser over q of -(w p log q + (1 - p) log(1 - q)) is w p / (w p + 1 - p).
    weighted_optimum = weight * true_p / (weight * true_p + 1 - true_p)
    shifted = shift_probabilities(np.array([[weighted_optimum]]), np.array([-np.log(weight)]))
    assert shifted[0, 0] == pytest.approx(true_p, rel=1e-5)


@pytest.mark.parametrize(("spec", "expected"), [
    (LossSpec(kind="weighted_bce", pos_weight_power=0.25), np.zeros(2)),  # not asked: nothing moves
    (LossSpec(kind="bce"), np.zeros(2)),
    (LossSpec(kind="weighted_bce", pos_weight_power=0.25, undo_weighting=True),
     -np.log(positive_weights(np.array([0.02, 0.8]), power=0.25, max_weight=20.0))),
])
def test_shift_is_minus_log_weight_only_when_asked(spec, expected):
    np.testing.assert_allclose(logit_shift(spec, np.array([0.02, 0.8])), expected, rtol=1e-6)


def test_undo_weighting_on_another_loss_is_refused_rather_than_ignored():
    with pytest.raises(FacialAttrError, match="undo_weighting applies to weighted_bce"):
        logit_shift(LossSpec(kind="bce", undo_weighting=True), np.array([0.5]))


def test_shipped_model_is_the_best_checkpoint_with_its_logits_shifted_back(tmp_path, celeba_factory):
    data_dir = celeba_factory(tmp_path / "celeba", n_train=48, n_val=16)
    config = {"size_hw": [40, 40], "alpha": 0.35, "weights": None, "split_layer": "block_2_add", "dropout": 0.0,
              "schedule": "end_to_end", "head_epochs": 0, "finetune_epochs": 1, "batch_size": 16,
              "loss": {"kind": "weighted_bce", "pos_weight_power": 0.5, "undo_weighting": True}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", str(data_dir), "--config", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0

    shipped = keras.saving.load_model(run / "model.keras", compile=False)
    images = np.random.default_rng(0).integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)
    served = shipped.predict(images, verbose=0)
    shipped.load_weights(run / "checkpoints" / "finetune" / "best.weights.h5")
    trained = shipped.predict(images, verbose=0)
    priors = np.array(ModelContract.from_parameters(json.loads((run / "contract.json").read_text())).priors)
    shift = logit_shift(LossSpec(kind="weighted_bce", pos_weight_power=0.5, undo_weighting=True), priors)
    assert np.abs(shift).max() > 0.1
    np.testing.assert_allclose(served, shift_probabilities(trained, shift), atol=1e-5)
