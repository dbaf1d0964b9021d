"""The training recipe as one typed config, read from and written to YAML/JSON.

Every run writes its final config next to its outputs (``config.yaml``), so a
model can be traced back to exactly how it was trained and re-run. Unknown keys
are an error, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facialattr.errors import FacialAttrError
from facialattr.training.losses import LossSpec

SCHEDULES = ("cached", "end_to_end")


@dataclass(frozen=True)
class Augmentation:
    """Random geometric and photometric changes for training views (fractions; 0 disables one)."""

    flip: bool = True
    rotation_deg: float = 8.0
    zoom: float = 0.08
    translation: float = 0.05
    brightness: float = 0.12
    contrast: float = 0.15


@dataclass(frozen=True)
class TrainConfig:
    """How ``facialattr train`` trains.

    ``schedule="cached"``: the frozen lower backbone (up to ``split_layer``) runs once
    over ``cache_views`` augmented views of each training image and the plain val
    view; the upper blocks and the head train on that cache. ``"end_to_end"``: the
    images go through the whole network every epoch (much slower on a CPU).
    Both train the head first (``head_epochs``), then unfreeze the upper blocks.
    """

    size_hw: tuple[int, int] = (128, 128)
    alpha: float = 1.0
    weights: str | None = "imagenet"
    split_layer: str = "block_12_add"
    init_weights: str | None = None  # end_to_end: warm start from a whole-model .weights.h5 of this architecture (any input size)
    dropout: float = 0.2
    trainable_from: str | None = None  # first upper-backbone layer to fine-tune (None: all above split_layer)
    train_batchnorm: bool = False  # False: BatchNorm frozen in inference mode (ImageNet statistics)
    bn_momentum: float | None = None  # None keeps Keras' 0.999, which lags badly in a short fine-tune
    bn_reestimate_batches: int = 0  # >0: recompute BatchNorm statistics on plain train views before scoring
    schedule: str = "cached"
    cache_dir: str | None = None  # default: RUN_DIR/cache; share one between runs of the same recipe
    cache_views: int = 2
    augmentation: Augmentation = field(default_factory=Augmentation)
    loss: LossSpec = field(default_factory=LossSpec)
    batch_size: int = 64
    head_epochs: int = 2
    head_lr: float = 1e-3
    finetune_epochs: int = 12
    finetune_lr: float = 3e-4
    ema_momentum: float | None = None  # set: score, checkpoint as best and ship an exponential moving average of the weights
    patience: int = 3
    monitor: str = "mean_auc"  # mean_auc | mean_accuracy | mean_balanced_accuracy (in-sample calibrated)
    max_train_images: int | None = None
    max_val_images: int | None = None
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise FacialAttrError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.monitor not in ("mean_auc", "mean_accuracy", "mean_balanced_accuracy"):
            raise FacialAttrError(f"unknown monitor {self.monitor!r}")
        if self.bn_momentum is not None and not 0.0 <= self.bn_momentum < 1.0:
            raise FacialAttrError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.init_weights is not None and self.schedule != "end_to_end":
            raise FacialAttrError("init_weights (a warm start of the whole model) needs schedule: end_to_end")
        if self.ema_momentum is not None and not 0.0 < self.ema_momentum < 1.0:
            raise FacialAttrError(f"ema_momentum must be in (0, 1), got {self.ema_momentum}")
        if self.bn_reestimate_batches < 0:
            raise FacialAttrError("bn_reestimate_batches must be >= 0")
        if self.cache_views < 1 or self.batch_size < 1 or self.threads < 1:
            raise FacialAttrError("cache_views, batch_size and threads must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (nested dataclasses become dicts), as :func:`config_from_dict` reads it."""
        return dataclasses.asdict(self)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from plain data (as a YAML/JSON config holds it). Raises FacialAttrError on an unknown key or bad value."""
    data = dict(data)
    nested = {"augmentation": Augmentation, "loss": LossSpec}
    try:
        for key, cls in nested.items():
            if key in data:
                data[key] = cls(**data[key])
        if "size_hw" in data:
            data["size_hw"] = tuple(data["size_hw"])
        return TrainConfig(**data)
    except TypeError as exc:
        raise FacialAttrError(f"bad training config: {exc}") from exc


def read_config_data(path: Path | str) -> dict[str, Any]:
    """The mapping in a YAML (or ``.json``) config file, as plain data.

    Raises FacialAttrError when the file is unreadable, does not parse, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FacialAttrError(f"cannot read config {path}: {exc}") from exc
    try:
        data = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise FacialAttrError(f"config {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise FacialAttrError(f"{path}: config must be a mapping")
    return data


def load_config(path: Path | str | None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a YAML (or ``.json``) file, or the defaults when ``path`` is None; ``overrides`` that are not None win.

    Raises FacialAttrError when the file is unreadable, not a mapping, or holds an unknown key or bad value.
    """
    data = {} if path is None else read_config_data(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(data)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write ``config`` as YAML to ``path`` (fields in declaration order; :func:`load_config` reads it back)."""
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))
