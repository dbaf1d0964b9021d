"""``facialattr train``: the head first, then the upper blocks, resumable, with early stopping.

The default ``cached`` schedule trains on frozen lower-backbone activations (see
``cache.py``) and finally assembles the served uint8 -> probabilities model from
the same layer objects, checking on real val images that it reproduces the
cached-path predictions. Outputs in RUN_DIR: model.keras, contract.json,
metrics.json/.md, config.yaml, history.csv, curves.png, checkpoints/.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from facialattr.errors import FacialAttrError
from facialattr.training.config import TrainConfig, save_config
from facialattr.training.phases import fit_phases, init_from_images, model_spec

log = logging.getLogger(__name__)

VERIFY_IMAGES = 16
VERIFY_TOLERANCE = 0.02  # float16 cache rounding moves probabilities by ~1e-3


def prepare_splits(data_dir: Path, config: TrainConfig):
    """(train, val) splits of the CelebA folder, subsampled (seeded) to the config's image limits.

    Raises DatasetError when the folder lacks files or a split.
    """
    from facialattr.training.data import load_celeba, require_splits

    train, val = require_splits(load_celeba(data_dir), "train", "val")
    rng = np.random.default_rng(config.seed)
    if config.max_train_images and config.max_train_images < len(train):
        train = train.subset(np.sort(rng.choice(len(train), config.max_train_images, replace=False)))
    if config.max_val_images and config.max_val_images < len(val):
        val = val.subset(np.sort(rng.choice(len(val), config.max_val_images, replace=False)))
    return train, val


def train(data_dir: Path, run_dir: Path, config: TrainConfig) -> dict:
    """Train by ``config.schedule`` into ``run_dir`` (resumable) and return the run's metrics summary.

    Writes model.keras, contract.json, metrics, curves and checkpoints; raises DatasetError for
    missing data and FacialAttrError when the assembled model disagrees with the cached path.
    """
    import keras

    from facialattr.training.pipeline import configure_threads

    configure_threads(config.threads)
    keras.utils.set_random_seed(config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    train_split, val_split = prepare_splits(Path(data_dir), config)
    if config.schedule != "cached":
        from facialattr.training.end_to_end import train_end_to_end

        return train_end_to_end(train_split, val_split, run_dir, config)
    return _train_cached(train_split, val_split, run_dir, config)


def _train_cached(train_split, val_split, run_dir: Path, config: TrainConfig) -> dict:
    from facialattr.training.cache import ensure_cache, load_cache
    from facialattr.training.model import build_model
    from facialattr.training.report import finish_run

    model = build_model(model_spec(config))
    if config.weights is None:
        init_from_images(model, train_split, config)
    cache_dir = Path(config.cache_dir) if config.cache_dir else run_dir / "cache"
    _sync_lower_weights(model, cache_dir)
    t0 = time.monotonic()
    files = ensure_cache(cache_dir, model, [val_split, train_split], augmentation=config.augmentation,
                         views=config.cache_views, seed=config.seed, batch_size=config.batch_size)
    cache_s = time.monotonic() - t0
    train_views = np.asarray(load_cache(files["train"]))
    val_features = np.asarray(load_cache(files["val"])[0])
    log.info("cache ready in %.0f s: train %s, val %s", cache_s, train_views.shape, val_features.shape)

    def set_upper_trainable(trainable: bool) -> None:
        model.set_upper_trainable(trainable, batchnorm=config.train_batchnorm, from_layer=config.trainable_from)

    timings = fit_phases(model.trainer, set_upper_trainable,
                         lambda seed: CachedViews(train_views, train_split.labels, config.batch_size, seed),
                         lambda: model.trainer.predict(val_features, batch_size=256, verbose=0),
                         val_split, train_split.priors, run_dir, config)
    val_scores = model.trainer.predict(val_features, batch_size=256, verbose=0)
    max_diff = verify_assembly(model, val_split, val_features, val_scores)
    timings.update(cache_build_s=round(cache_s, 1), assembled_vs_cached_max_abs_diff=max_diff)
    return finish_run(run_dir, model.full, config, train_split, val_split, val_scores, timings)


def _sync_lower_weights(model, cache_dir: Path) -> None:
    """Pin the frozen lower part to the weights the cache was built with (matters for weights=None)."""
    path = cache_dir / "lower.weights.h5"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        model.lower.load_weights(path)
    else:
        model.lower.save_weights(path)


def verify_assembly(model, val_split, val_features, val_scores) -> float:
    """The assembled uint8 model must reproduce the cached-path predictions on real images."""
    from facialattr.training.pipeline import image_dataset

    n = min(VERIFY_IMAGES, len(val_split))
    images = next(iter(image_dataset(val_split.paths[:n], model.spec.size_hw, batch_size=n))).numpy()
    direct = model.full.predict(images, verbose=0)
    diff = float(np.abs(direct - val_scores[:n]).max())
    if diff > VERIFY_TOLERANCE:
        raise FacialAttrError(f"assembled model disagrees with the cached path by {diff:.4f} on val images")
    log.info("assembled model reproduces the cached path on %d val images (max |diff| %.5f)", n, diff)
    return round(diff, 6)


class CachedViewsBase:
    """Batches of (activations, labels); each epoch draws one random cached view per image."""

    def __init__(self, views: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> None:
        self.views, self.labels, self.batch_size = views, labels.astype(np.float32), batch_size
        self.rng = np.random.default_rng(seed)
        self._shuffle()

    def _shuffle(self) -> None:
        n = self.views.shape[1]
        self.order = self.rng.permutation(n)
        self.view_of = self.rng.integers(0, self.views.shape[0], n)

    def __len__(self) -> int:
        return math.ceil(self.views.shape[1] / self.batch_size)

    def __getitem__(self, index: int):
        idx = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.views[self.view_of[idx], idx].astype(np.float32), self.labels[idx]

    def on_epoch_end(self) -> None:
        """Reshuffle (and pick other augmented views) for the next epoch."""
        self._shuffle()


def CachedViews(views, labels, batch_size, seed):  # noqa: N802 - a class built lazily so keras loads late
    """A ``keras.utils.PyDataset`` over cached views (float32 batches of ``batch_size``), shuffled per epoch."""
    import keras

    cls = type("CachedViews", (CachedViewsBase, keras.utils.PyDataset), {})
    obj = cls.__new__(cls)
    keras.utils.PyDataset.__init__(obj)
    CachedViewsBase.__init__(obj, views, labels, batch_size, seed)
    return obj
