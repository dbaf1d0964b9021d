"""Weight EMA: the averaged weights are scored and kept as best, while training continues from the raw ones."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from facialattr.errors import FacialAttrError
from facialattr.training.config import TrainConfig
from facialattr.training.resume import PhaseState, ResumableEpochs


def _model_and_data(use_ema: bool):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=use_ema, ema_momentum=0.9), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return model, x, (x[:, :3] > 0).astype("float32")


def _kernel(model) -> np.ndarray:
    return model.trainable_variables[0].numpy().copy()


def test_with_ema_the_scored_and_best_weights_are_the_average_and_training_resumes_from_the_raw_ones(tmp_path):
    model, x, y = _model_and_data(use_ema=True)
    scored: list[np.ndarray] = []

    def score() -> dict[str, float]:
        scored.append(_kernel(model))
        return {"mean_auc": 0.5}

    phase = PhaseState(tmp_path / "phase")
    callback = ResumableEpochs(phase, score, monitor="mean_auc", patience=5)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    average = model.optimizer._model_variables_moving_average[0].numpy()
    model.load_weights(phase.last)
    raw = _kernel(model)
    model.load_weights(phase.best)
    best = _kernel(model)

    assert not np.allclose(raw, average)  # eight steps at momentum 0.9: the two differ
    np.testing.assert_allclose(scored[0], average, rtol=1e-6)
    np.testing.assert_allclose(best, average, rtol=1e-6)


def test_without_ema_the_scored_weights_are_the_trained_ones(tmp_path):
    model, x, y = _model_and_data(use_ema=False)
    scored: list[np.ndarray] = []
    phase = PhaseState(tmp_path / "phase")
    callback = ResumableEpochs(phase, lambda: scored.append(_kernel(model)) or {"mean_auc": 0.5},
                               monitor="mean_auc", patience=5)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    np.testing.assert_array_equal(scored[0], _kernel(model))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_config_rejects_an_ema_momentum_outside_zero_to_one(bad):
    with pytest.raises(FacialAttrError, match="ema_momentum"):
        TrainConfig(ema_momentum=bad)
