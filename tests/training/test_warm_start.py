"""Warm start (``init_weights``): a run's whole-model weights start another run, at any input size."""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.errors import FacialAttrError
from facialattr.training.config import TrainConfig
from facialattr.training.model import ModelSpec, build_model, load_whole_model_weights


def _model(size: int, alpha: float = 0.35):
    return build_model(ModelSpec(size_hw=(size, size), alpha=alpha, weights=None, split_layer="block_2_add"))


def test_weights_of_a_smaller_input_start_a_larger_one_unchanged(tmp_path):
    source = _model(48)
    path = tmp_path / "best.weights.h5"
    source.full.save_weights(path)
    target = _model(64)
    load_whole_model_weights(target, path)
    for saved, loaded in zip(source.full.get_weights(), target.full.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, loaded)


def test_weights_of_another_width_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "other.weights.h5"
    _model(48, alpha=0.5).full.save_weights(path)
    with pytest.raises(FacialAttrError, match="other.weights.h5"):
        load_whole_model_weights(_model(48), path)


def test_a_missing_weights_file_is_refused_naming_it(tmp_path):
    with pytest.raises(FacialAttrError, match="missing.weights.h5 does not exist"):
        load_whole_model_weights(_model(48), tmp_path / "missing.weights.h5")


def test_warm_start_on_the_cached_schedule_is_refused_rather_than_ignored():
    with pytest.raises(FacialAttrError, match="end_to_end"):
        TrainConfig(schedule="cached", init_weights="run/best.weights.h5")
