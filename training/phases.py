"""What both training schedules share: the model spec from the config, BatchNorm
initialisation from images, and the resumable head-then-fine-tune phases.

``train.py`` (the ``cached`` schedule and the entry point) and ``end_to_end.py``
both import it, so neither imports the other back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from facialattr.training.config import TrainConfig

log = logging.getLogger(__name__)


def model_spec(config: TrainConfig):
    """The :class:`~facialattr.training.model.ModelSpec` (input size in pixels, width, weights, split, dropout) of ``config``."""
    from facialattr.training.model import ModelSpec

    return ModelSpec(size_hw=tuple(config.size_hw), alpha=config.alpha, weights=config.weights,
                     split_layer=config.split_layer, dropout=config.dropout)


def init_from_images(model, train_split, config: TrainConfig, *, n: int = 64) -> None:
    """Data-dependent BatchNorm initialisation for a randomly initialised backbone."""
    from facialattr.training.model import init_batchnorm_from_data
    from facialattr.training.pipeline import image_dataset

    images = next(iter(image_dataset(train_split.paths[:n], model.spec.size_hw, batch_size=n)))
    init_batchnorm_from_data(model, images)


def fit_phases(trainer, set_upper_trainable, make_data, predict_val, val_split, priors, run_dir: Path,
               config: TrainConfig) -> dict:
    """Head phase (upper frozen) then fine-tune phase (upper trainable), each resumable.

    Each phase checkpoints under ``run_dir/checkpoints/<phase>`` and stops early on ``config.monitor``;
    the best phase's weights are left in ``trainer``, with the head's logits shifted back when the
    loss asks (``undo_weighting``); scoring during training sees the same shifted probabilities.
    Returns timings (``<phase>_s_per_epoch`` in seconds, ``chosen_phase``). Raises FacialAttrError
    when the loss settings do not fit together.
    """
    import keras

    from facialattr.training.losses import logit_shift, make_loss, shift_probabilities
    from facialattr.training.metrics import calibrate_thresholds, evaluate_scores, threshold_metrics
    from facialattr.training.model import shift_output_logits
    from facialattr.training.resume import PhaseState, ResumableEpochs

    loss = make_loss(config.loss, priors)
    shift = logit_shift(config.loss, priors)

    def score() -> dict[str, float]:
        scores = shift_probabilities(predict_val(), shift)
        at_half = evaluate_scores(val_split.labels, scores, 0.5)
        calibrated = threshold_metrics(val_split.labels, scores, calibrate_thresholds(val_split.labels, scores))
        return {"mean_auc": float(np.nanmean(at_half["roc_auc"])),
                "mean_accuracy": float(at_half["accuracy"].mean()),
                "mean_balanced_accuracy": float(calibrated["balanced_accuracy"].mean())}

    timings: dict = {}
    finished: list[tuple[float, str, object]] = []
    phases = (("head", config.head_epochs, config.head_lr, False),
              ("finetune", config.finetune_epochs, config.finetune_lr, True))
    for name, epochs, lr, upper in phases:
        if epochs <= 0:
            continue
        set_upper_trainable(upper)
        phase = PhaseState(run_dir / "checkpoints" / name)
        data = make_data(config.seed + len(name))
        steps = len(data) * epochs
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(steps, 1), alpha=0.05)
        ema = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
        trainer.compile(optimizer=keras.optimizers.Adam(schedule, **ema), loss=loss)
        state = phase.read()
        if state.get("stopped") or state["epoch"] + 1 >= epochs:
            log.info("phase %s already finished; loading its best weights", name)
        else:
            start = phase.restore(trainer)
            callback = ResumableEpochs(phase, score, monitor=config.monitor, patience=config.patience,
                                       images_per_epoch=len(data) * config.batch_size)
            t0 = time.monotonic()
            trainer.fit(data, epochs=epochs, initial_epoch=start, verbose=2, callbacks=[
                callback, keras.callbacks.CSVLogger(str(run_dir / f"history_{name}.csv"), append=True)])
            timings[f"{name}_s_per_epoch"] = round((time.monotonic() - t0) / max(epochs - start, 1), 1)
        trainer.load_weights(phase.best)
        finished.append((phase.read()["best"], name, phase))
    best, name, phase = max(finished, key=lambda f: f[0])
    if name != finished[-1][1]:  # fine-tuning did not help: ship the head-only weights
        log.info("phase %s scored best (val %s %.4f); using its weights", name, config.monitor, best)
        trainer.load_weights(phase.best)
    timings["chosen_phase"] = name
    if np.any(shift):
        shift_output_logits(trainer, shift)
        log.info("head logits shifted by -log(positive weight) (%.2f to %.2f): calibrated probabilities again",
                 shift.min(), shift.max())
    return timings
