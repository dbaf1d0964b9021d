"""The library behind ``facialattr predict``: one ranked prediction per input, from a Scorer or from settings."""

from __future__ import annotations

import pytest

from facialattr import repository
from facialattr.client.predict import Prediction, format_json, format_table, predict
from facialattr.client.ranking import top_attributes
from facialattr.client.scorer import Scorer
from facialattr.client.settings import ScorerSettings


@pytest.fixture(scope="module")
def contract(tiny_repository):
    return repository.load_model(tiny_repository).contract


@pytest.mark.parametrize("opened_by", ["settings", "scorer"])
def test_predictions_rank_the_reference_probabilities_whoever_opens_the_scorer(tmp_path, make_jpegs, grpc_url,
                                                                               reference, contract, opened_by):
    faces = make_jpegs(tmp_path, 2)
    if opened_by == "settings":
        predictions = predict(faces, settings=ScorerSettings(urls=grpc_url), k=5)
    else:
        with Scorer.from_settings(ScorerSettings(urls=grpc_url)) as scorer:
            predictions = predict(faces, scorer, k=5)
    assert [p.path for p in predictions] == list(map(str, faces))
    for prediction, face in zip(predictions, faces, strict=True):
        expected = top_attributes(reference([face])[str(face)], contract, k=5)
        assert prediction.ok and [a.name for a in prediction.attributes] == [a.name for a in expected]


def test_an_error_prediction_renders_as_its_kind_and_message_in_both_formats():
    failed = Prediction("gone.jpg", error="gone.jpg: no such file", error_kind="not_found")
    assert format_table([failed]) == "gone.jpg\n  error (not_found): gone.jpg: no such file"
    assert '"status": "error"' in format_json([failed]) and '"error_kind": "not_found"' in format_json([failed])
