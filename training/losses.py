"""Imbalance-aware losses on sigmoid probabilities [N, 40].

CelebA is skewed (Bald 2 %, No_Beard 84 %): plain BCE lets rare attributes hide
behind the majority class. ``weighted_bce`` scales each attribute's positive term
by ((1 - p) / p) ** power from the training priors (power 1 balances the classes
fully, 0.5 halfway, which keeps probabilities closer to calibrated); ``focal``
down-weights easy examples instead (Lin et al. 2017) with optional alpha balancing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facialattr.contract import logits

EPSILON = 1e-6


@dataclass(frozen=True)
class LossSpec:
    """Which loss :func:`make_loss` builds and its knobs (see the module docstring)."""

    kind: str = "weighted_bce"  # weighted_bce | focal | bce
    pos_weight_power: float = 0.5
    max_pos_weight: float = 20.0
    focal_gamma: float = 2.0
    focal_alpha_from_priors: bool = False
    label_smoothing: float = 0.0  # targets become y (1 - s) + s / 2
    undo_weighting: bool = False  # weighted_bce: after training, shift the head's logits by -log(weight)


def positive_weights(priors: np.ndarray, *, power: float, max_weight: float) -> np.ndarray:
    """Per-attribute weight of the positive term, ((1 - p) / p) ** ``power`` from the priors, clipped to [1/max_weight, max_weight]."""
    p = np.clip(np.asarray(priors, dtype=np.float64), 1e-3, 1 - 1e-3)
    return np.clip(((1 - p) / p) ** power, 1 / max_weight, max_weight).astype(np.float32)


def make_loss(spec: LossSpec, priors: np.ndarray):
    """A Keras loss ``(y_true, y_pred) -> [N]`` on sigmoid probabilities, as ``spec`` says, for the training ``priors`` (one per attribute).

    Raises FacialAttrError for an unknown kind, or label smoothing outside [0, 1) or with focal loss.
    """
    from keras import ops

    from facialattr.errors import FacialAttrError

    if spec.kind == "bce":
        weights = np.ones(len(priors), np.float32)
    elif spec.kind == "weighted_bce":
        weights = positive_weights(priors, power=spec.pos_weight_power, max_weight=spec.max_pos_weight)
    elif spec.kind == "focal":
        if spec.label_smoothing:
            raise FacialAttrError("label_smoothing applies to bce/weighted_bce, not focal")
        p = np.clip(np.asarray(priors, np.float32), 0.01, 0.99)
        alpha = (1 - p) if spec.focal_alpha_from_priors else np.full(len(priors), 0.5, np.float32)
        gamma = spec.focal_gamma

        def focal(y_true, y_pred):
            y = ops.cast(y_true, "float32")
            q = ops.clip(y_pred, EPSILON, 1 - EPSILON)
            pt = y * q + (1 - y) * (1 - q)
            at = y * alpha + (1 - y) * (1 - alpha)
            # Scaled by 2 so alpha=0.5, gamma=0 equals plain BCE.
            return ops.mean(-2 * at * ops.power(1 - pt, gamma) * ops.log(pt), axis=-1)

        return focal
    else:
        raise FacialAttrError(f"unknown loss {spec.kind!r} (weighted_bce, focal, bce)")

    smoothing = float(spec.label_smoothing)
    if not 0.0 <= smoothing < 1.0:
        raise FacialAttrError(f"label_smoothing must be in [0, 1), got {smoothing}")

    def weighted_bce(y_true, y_pred):
        y = ops.cast(y_true, "float32") * (1 - smoothing) + smoothing / 2
        q = ops.clip(y_pred, EPSILON, 1 - EPSILON)
        return ops.mean(-(weights * y * ops.log(q) + (1 - y) * ops.log(1 - q)), axis=-1)

    return weighted_bce


def logit_shift(spec: LossSpec, priors: np.ndarray) -> np.ndarray:
    """What to add to each attribute's logit after training: ``-log(positive weight)`` when ``spec.undo_weighting``, else 0.

    Weighting the positive term by w moves the loss's optimum from p to w p / (w p + 1 - p),
    which is the calibrated logit plus log w. Subtracting it gives calibrated probabilities
    again (accuracy at 0.5 recovers) and leaves every per-attribute ranking, hence ROC AUC and
    balanced accuracy at fitted thresholds, as weighting made them. Raises FacialAttrError for
    ``undo_weighting`` on a loss other than ``weighted_bce``.
    """
    from facialattr.errors import FacialAttrError

    if not spec.undo_weighting:
        return np.zeros(len(priors), np.float32)
    if spec.kind != "weighted_bce":
        raise FacialAttrError(f"undo_weighting applies to weighted_bce, not {spec.kind}")
    return -np.log(positive_weights(priors, power=spec.pos_weight_power, max_weight=spec.max_pos_weight))


def shift_probabilities(probabilities: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Sigmoid probabilities [N, attributes] with ``shift`` added to their logits (float64 math, float32 out)."""
    if not np.any(shift):
        return probabilities
    return (1 / (1 + np.exp(-(logits(probabilities, eps=1e-12) + shift)))).astype(np.float32)
