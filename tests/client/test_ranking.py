"""Top-k ranking: present attributes first, by log-odds lift over the training prior (pure unit)."""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.client.ranking import lift_scores, top_attributes, top_by_probability
from facialattr.contract import ModelContract
from facialattr.errors import InputError

NAMES = ("No_Beard", "Young", "Eyeglasses", "Bald", "Smiling")
CONTRACT = ModelContract(
    attribute_names=NAMES,
    thresholds=(0.5, 0.5, 0.5, 0.3, 0.5),
    priors=(0.83, 0.75, 0.065, 0.02, 0.48),
)

CASES = [
    # (why, probabilities, expected order of the top names)
    ("a rare present attribute outranks a very common one with higher probability",
     (0.95, 0.20, 0.70, 0.01, 0.10), ["Eyeglasses", "No_Beard"]),
    ("present beats absent even when the absent one has a larger lift",
     (0.90, 0.10, 0.10, 0.25, 0.10), ["No_Beard", "Bald"]),
    ("the per-attribute threshold decides presence, not 0.5",
     (0.10, 0.10, 0.10, 0.35, 0.10), ["Bald"]),
    ("a common attribute predicted at its prior has lift zero and follows rarer present ones",
     (0.83, 0.75, 0.60, 0.01, 0.60), ["Eyeglasses", "Smiling", "No_Beard", "Young"]),
    ("nothing present: the least unlikely by lift come first",
     (0.40, 0.05, 0.30, 0.01, 0.02), ["Eyeglasses", "Bald", "No_Beard", "Smiling", "Young"]),
]


@pytest.mark.parametrize("why,probabilities,expected", CASES, ids=[c[0] for c in CASES])
def test_top_attributes_ranks_by_presence_then_lift(why, probabilities, expected):
    ranked = top_attributes(np.array(probabilities), CONTRACT, k=len(expected))
    assert [r.name for r in ranked] == expected


def test_raw_probability_ranking_would_put_the_common_attribute_first():
    probabilities = np.array((0.95, 0.20, 0.70, 0.01, 0.10))
    assert top_by_probability(probabilities, CONTRACT, k=2) == ["No_Beard", "Eyeglasses"]
    assert [r.name for r in top_attributes(probabilities, CONTRACT, k=2)] == ["Eyeglasses", "No_Beard"]


def test_ranked_attribute_carries_probability_presence_and_lift():
    first = top_attributes(np.array((0.95, 0.20, 0.70, 0.01, 0.10)), CONTRACT, k=1)[0]
    assert first.name == "Eyeglasses" and first.present
    assert first.probability == pytest.approx(0.70)
    assert first.score == pytest.approx(np.log(0.7 / 0.3) - np.log(0.065 / 0.935))


def test_saturated_probabilities_give_finite_scores_and_ties_keep_contract_order():
    ranked = top_attributes(np.array((1.0, 1.0, 0.0, 0.0, 1.0)), ModelContract(attribute_names=NAMES, thresholds=(0.5,) * 5, priors=(0.5,) * 5), k=5)
    assert [r.name for r in ranked] == ["No_Beard", "Young", "Smiling", "Eyeglasses", "Bald"]
    assert all(np.isfinite(r.score) for r in ranked)


@pytest.mark.parametrize("k,expected_len", [(0, 0), (3, 3), (10, 5)])
def test_k_limits_the_list(k, expected_len):
    assert len(top_attributes(np.full(5, 0.5), CONTRACT, k=k)) == expected_len


@pytest.mark.parametrize("probabilities,k", [(np.full(4, 0.5), 3), (np.full(5, 0.5), -1)])
def test_wrong_length_or_negative_k_is_refused(probabilities, k):
    with pytest.raises(InputError):
        top_attributes(probabilities, CONTRACT, k=k)


def test_lift_is_zero_at_the_prior_and_vectorises_over_a_batch():
    priors = np.array(CONTRACT.priors)
    scores = lift_scores(np.stack([priors, priors]), priors)
    assert scores.shape == (2, 5)
    np.testing.assert_allclose(scores, 0.0, atol=1e-9)
