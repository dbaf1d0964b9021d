"""BatchNorm handling of the whole-network recipe: momentum, re-estimation, label smoothing, config checks."""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.errors import FacialAttrError
from facialattr.training.config import TrainConfig
from facialattr.training.losses import LossSpec, make_loss
from facialattr.training.model import (
    ModelSpec,
    batchnorm_layers,
    build_model,
    reestimate_batchnorm,
    set_batchnorm_momentum,
)

SMALL = ModelSpec(size_hw=(32, 32), alpha=0.35, weights=None, split_layer="block_2_add", dropout=0.0)


@pytest.fixture(scope="module")
def model():
    return build_model(SMALL)


def test_momentum_reaches_every_batchnorm_of_both_halves(model):
    set_batchnorm_momentum(model, 0.9)
    layers = batchnorm_layers(model)
    assert len(layers) == 52 and {layer.momentum for layer in layers} == {0.9}
    with pytest.raises(FacialAttrError, match="momentum"):
        set_batchnorm_momentum(model, 1.0)


def test_reestimation_sets_the_plain_mean_of_batch_statistics_and_restores_settings(model):
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    first = batchnorm_layers(model)[0]  # its input is the fixed normalised image conv, so its batch mean is computable
    first.trainable, first.momentum = False, 0.5
    assert reestimate_batchnorm(model, batches) == 3
    assert first.trainable is False and first.momentum == 0.5
    conv = model.lower.get_layer("backbone_lower").get_layer("Conv1")
    means = [np.mean(conv(images.astype(np.float32) / 127.5 - 1).numpy(), axis=(0, 1, 2)) for images in batches]
    np.testing.assert_allclose(first.moving_mean.numpy(), np.mean(means, axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("smoothing, y, expected_target", [(0.0, 1.0, 1.0), (0.2, 1.0, 0.9), (0.2, 0.0, 0.1)])
def test_label_smoothing_moves_bce_targets_towards_one_half(smoothing, y, expected_target):
    loss = make_loss(LossSpec(kind="bce", label_smoothing=smoothing), np.array([0.5]))
    q = np.array([[0.7]], np.float32)
    want = -(expected_target * np.log(0.7) + (1 - expected_target) * np.log(0.3))
    assert float(loss(np.array([[y]], np.float32), q)[0]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("bad", [dict(bn_momentum=1.5), dict(bn_reestimate_batches=-1)])
def test_config_rejects_bad_batchnorm_settings(bad):
    with pytest.raises(FacialAttrError):
        TrainConfig(**bad)


def test_focal_loss_refuses_label_smoothing_rather_than_ignoring_it():
    with pytest.raises(FacialAttrError, match="label_smoothing"):
        make_loss(LossSpec(kind="focal", label_smoothing=0.1), np.array([0.5]))
