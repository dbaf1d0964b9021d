"""The ``end_to_end`` schedule: images through the whole network every epoch.

Augmentation runs in the tf.data training graph only; the lower backbone stays
frozen in the head phase (if any) and trains in the fine-tune phase. On a quiet
2-core CPU the whole network trains at about 100 images/s at 128 px.

BatchNorm is handled by the config: frozen in inference mode (``train_batchnorm:
false``), or trained with a momentum short enough to follow the new weights
(``bn_momentum``), optionally followed by re-estimating the moving statistics on
plain training views before every scoring (``bn_reestimate_batches``). The
re-estimated network is the one scored, checkpointed and saved, so export ships
exactly what was evaluated.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def train_end_to_end(train_split, val_split, run_dir: Path, config) -> dict:
    """Train the whole network on images (the ``end_to_end`` schedule) and finish the run in ``run_dir``.

    Returns the run's metrics summary; raises FacialAttrError for inconsistent loss settings.
    """
    from facialattr.training.evaluate import batched, decode_images, predict_images
    from facialattr.training.model import (
        build_model,
        load_whole_model_weights,
        reestimate_batchnorm,
        set_batchnorm_momentum,
    )
    from facialattr.training.phases import fit_phases, init_from_images, model_spec
    from facialattr.training.pipeline import image_dataset
    from facialattr.training.report import finish_run

    model = build_model(model_spec(config))
    if config.init_weights is not None:
        load_whole_model_weights(model, config.init_weights)
    elif config.weights is None:
        init_from_images(model, train_split, config)
    if config.bn_momentum is not None:
        set_batchnorm_momentum(model, config.bn_momentum)
    size_hw = model.spec.size_hw
    # Decoded once, before fit: iterating a second tf.data pipeline from inside a Keras callback
    # while the training iterator is alive deadlocked (all threads in futex waits) on this machine.
    # The re-estimation sample is a fixed, seeded set of plain (unaugmented) training views.
    sample = np.random.default_rng(config.seed).permutation(len(train_split))[
        :config.bn_reestimate_batches * config.batch_size]
    reestimate_images = decode_images([train_split.paths[i] for i in sample], size_hw, batch_size=config.batch_size)
    val_images = decode_images(val_split.paths, size_hw, batch_size=config.batch_size)

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
        if len(reestimate_images):
            count = reestimate_batchnorm(model, batched(reestimate_images, config.batch_size))
            log.info("BatchNorm statistics re-estimated on %d batches of plain training views", count)
        return predict_images(model.full, val_images, batch_size=config.batch_size)

    t0 = time.monotonic()
    timings = fit_phases(model.full, set_trainable, make_data, predict_val, val_split, train_split.priors,
                         run_dir, config)
    timings["total_s"] = round(time.monotonic() - t0, 1)
    return finish_run(run_dir, model.full, config, train_split, val_split, predict_val(), timings)
