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
from facialattr.training.config import TrainConfig, save_config

from facialattr.errors import FacialAttrError

log = logging.getLogger(__name__)

VERIFY_IMAGES = 16
VERIFY_TOLERANCE = 0.02  # float16 cache rounding moves probabilities by ~1e-3


def prepare_splits(data_dir: Path, config: TrainConfig):
    from facialattr.training.data import load_celeba, require_splits

    train, val = require_splits(load_celeba(data_dir), "train", "val")
    rng = np.random.default_rng(config.seed)
    if config.max_train_images and config.max_train_images < len(train):
        train = train.subset(np.sort(rng.choice(len(train), config.max_train_images, replace=False)))
    if config.max_val_images and config.max_val_images < len(val):
        val = val.subset(np.sort(rng.choice(len(val), config.max_val_images, replace=False)))
    return train, val


def model_spec(config: TrainConfig):
    from facialattr.training.model import ModelSpec

    return ModelSpec(size_hw=tuple(config.size_hw), alpha=config.alpha, weights=config.weights,
                     split_layer=config.split_layer, dropout=config.dropout)


def train(data_dir: Path, run_dir: Path, config: TrainConfig) -> dict:
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


def init_from_images(model, train_split, config: TrainConfig, *, n: int = 64) -> None:
    """Data-dependent BatchNorm initialisation for a randomly initialised backbone."""
    from facialattr.training.model import init_batchnorm_from_data
    from facialattr.training.pipeline import image_dataset

    images = next(iter(image_dataset(train_split.paths[:n], model.spec.size_hw, batch_size=n)))
    init_batchnorm_from_data(model, images)


def _sync_lower_weights(model, cache_dir: Path) -> None:
    """Pin the frozen lower part to the weights the cache was built with (matters for weights=None)."""
    path = cache_dir / "lower.weights.h5"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        model.lower.load_weights(path)
    else:
        model.lower.save_weights(path)


def fit_phases(trainer, set_upper_trainable, make_data, predict_val, val_split, priors, run_dir: Path,
               config: TrainConfig) -> dict:
    """Head phase (upper frozen) then fine-tune phase (upper trainable), each resumable."""
    import keras
    from facialattr.training.losses import make_loss
    from facialattr.training.metrics import calibrate_thresholds, evaluate_scores, threshold_metrics
    from facialattr.training.resume import PhaseState, ResumableEpochs

    loss = make_loss(config.loss, priors)

    def score() -> dict[str, float]:
        scores = predict_val()
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
        trainer.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
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
    return timings


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
        self._shuffle()


def CachedViews(views, labels, batch_size, seed):  # noqa: N802 - a class built lazily so keras loads late
    import keras

    cls = type("CachedViews", (CachedViewsBase, keras.utils.PyDataset), {})
    obj = cls.__new__(cls)
    keras.utils.PyDataset.__init__(obj)
    CachedViewsBase.__init__(obj, views, labels, batch_size, seed)
    return obj
