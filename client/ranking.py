"""Top-k attributes: the ones most confidently present, not merely the most common.

Raw probability ranking puts No_Beard (83 % of CelebA) and Young (75 %) on top
of nearly every face. Here an attribute's score is its log-odds lift over the
training prior, ``logit(p) - logit(prior)``: how much more likely the model
thinks it is for *this* face than for an average face. Present attributes
(``p >= threshold``) always rank above absent ones. See docs/TOP10.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facialattr.contract import ModelContract, logits
from facialattr.errors import InputError

# Keeps logit finite for probabilities of exactly 0 or 1 (float32 sigmoid saturates).
_EPS = 1e-6


@dataclass(frozen=True)
class RankedAttribute:
    """One attribute of one face: probability in [0, 1], present at its threshold, ``score`` its lift over the prior (logits)."""

    name: str
    probability: float
    present: bool
    score: float


def lift_scores(probabilities: np.ndarray, priors: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """logit(p) - logit(prior), element-wise; works on [40] or [N, 40]."""
    return logits(probabilities, eps=_EPS) - logits(priors, eps=_EPS)


class Ranker:
    """The ranking rule with the contract's priors and thresholds prepared once (for millions of rows)."""

    def __init__(self, contract: ModelContract) -> None:
        self.names = contract.attribute_names
        self.thresholds = np.asarray(contract.thresholds, dtype=np.float64)
        self.priors = np.asarray(contract.priors, dtype=np.float64)
        self._index = np.arange(len(self.names))

    def order(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(attribute indices best first, lift scores, present flags) for one face's probabilities."""
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if p.shape[0] != len(self.names):
            raise InputError(f"expected {len(self.names)} probabilities, got {p.shape[0]}")
        scores = lift_scores(p, self.priors)
        present = p >= self.thresholds
        # lexsort: the last key is primary. Present first, then lift descending, then contract order.
        return np.lexsort((self._index, -scores, ~present)), scores, present

    def top_names(self, probabilities: np.ndarray, k: int = 10) -> list[str]:
        """The names of the ``k`` best attributes of one face (the order of :meth:`order`). Raises InputError on a wrong length."""
        order, _, _ = self.order(probabilities)
        return [self.names[i] for i in order[:k]]


def top_attributes(probabilities: np.ndarray, contract: ModelContract, *, k: int = 10) -> list[RankedAttribute]:
    """The ``k`` best attributes of one face: present ones first, each group by lift over the prior.

    Ties (equal present flag and score) keep the contract's attribute order.
    """
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    order, scores, present = Ranker(contract).order(p)
    return [
        RankedAttribute(
            name=contract.attribute_names[i],
            probability=float(p[i]),
            present=bool(present[i]),
            score=float(scores[i]) if math.isfinite(scores[i]) else 0.0,
        )
        for i in order[:k]
    ]


def top_by_probability(probabilities: np.ndarray, contract: ModelContract, *, k: int = 10) -> list[str]:
    """The naive ranking (highest raw probability first), kept for comparison in docs/TOP10.md."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(p.shape[0]), -p))
    return [contract.attribute_names[i] for i in order[:k]]
