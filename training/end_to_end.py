"""The ``end_to_end`` schedule: images through the whole network every epoch.

Augmentation runs in the tf.data training graph only; the lower backbone stays
frozen in the head phase and trains (BatchNorm aside) in the fine-tune phase.
On a 2-core CPU this costs ~22 images/s at 128 px (docs/MODEL_CARD.md), which is
why ``cached`` is the default; on a GPU this is the simpler choice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def train_end_to_end(train_split, val_split, run_dir: Path, config) -> dict:
    from facialattr.training.evaluate import predict_split
    from facialattr.training.model import build_model
    from facialattr.training.pipeline import image_dataset
    from facialattr.training.report import finish_run
    from facialattr.training.train import fit_phases, init_from_images, model_spec

    model = build_model(model_spec(config))
    if config.weights is None:
        init_from_images(model, train_split, config)
    size_hw = model.spec.size_hw

    def set_trainable(trainable: bool) -> None:
        model.set_upper_trainable(trainable, batchnorm=config.train_batchnorm, from_layer=config.trainable_from)
        lower_backbone = model.lower.get_layer("backbone_lower")
        lower_backbone.trainable = trainable
        for layer in lower_backbone.layers:
            is_bn = layer.__class__.__name__ == "BatchNormalization"
            layer.trainable = trainable and (config.train_batchnorm or not is_bn)

    def make_data(seed: int):
        return image_dataset(train_split.paths, size_hw, batch_size=config.batch_size, labels=train_split.labels,
                             shuffle_seed=seed, augmentation=config.augmentation, aug_seed=seed)

    def predict_val() -> np.ndarray:
        return predict_split(model.full, val_split, size_hw, batch_size=config.batch_size)

    t0 = time.monotonic()
    timings = fit_phases(model.full, set_trainable, make_data, predict_val, val_split, train_split.priors,
                         run_dir, config)
    timings["total_s"] = round(time.monotonic() - t0, 1)
    return finish_run(run_dir, model.full, config, train_split, val_split, predict_val(), timings)
