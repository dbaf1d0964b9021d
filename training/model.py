"""MobileNetV2 with a 40-way sigmoid head, split in two for the cached-backbone schedule.

The served model takes uint8 RGB ``images`` [N, H, W, 3] and scales to [-1, 1]
inside the graph (so no client can get normalisation wrong); its output layer is
``probabilities`` [N, 40]. For training on cached activations the backbone is cut
at ``split_layer``: ``backbone_lower`` (frozen, run once over the images) and
``backbone_upper`` + head (trained on the cache). Both halves share their layer
objects with the assembled model, so the shipped weights are exactly the trained ones.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from facialattr.errors import FacialAttrError
from facialattr.triton_config import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """What to build. ``weights`` is "imagenet", None, or a path to a no-top .weights.h5 file."""

    size_hw: tuple[int, int] = (128, 128)
    num_outputs: int = 40
    alpha: float = 1.0
    weights: str | None = "imagenet"
    split_layer: str = "block_12_add"
    dropout: float = 0.2


@dataclass
class AttributeModel:
    """The full served model and its two trainable-side views."""

    full: keras.Model  # uint8 images -> probabilities
    lower: keras.Model  # uint8 images -> split activations (frozen)
    trainer: keras.Model  # split activations -> probabilities (upper blocks + head)
    upper: keras.Model  # split activations -> last backbone feature map
    spec: ModelSpec

    def set_upper_trainable(self, trainable: bool, *, batchnorm: bool = False, from_layer: str | None = None) -> None:
        """Unfreeze (or freeze) the upper blocks; BatchNorm stays in inference mode unless asked.

        Updating BatchNorm statistics on batches of a new domain drifts pretrained
        features, so keeping them fixed is the usual fine-tuning choice; a randomly
        initialised network (``weights=None``) needs them trained to learn at all.
        ``from_layer`` keeps the upper layers before it frozen: their backward pass
        is the dearest part of a CPU step and buys little accuracy.
        """
        self.upper.trainable = trainable
        reached = from_layer is None
        for layer in self.upper.layers:
            reached = reached or layer.name == from_layer
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = trainable and reached and (batchnorm or not is_bn)
        if from_layer is not None and not reached:
            raise FacialAttrError(f"the upper backbone has no layer {from_layer!r} to train from")


def _backbone(spec: ModelSpec) -> keras.Model:
    weights = spec.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise FacialAttrError(f"backbone weights file {weights} does not exist")
    h, w = spec.size_hw
    return keras.applications.MobileNetV2(
        include_top=False, weights=weights, input_shape=(h, w, 3), alpha=spec.alpha)


def build_model(spec: ModelSpec) -> AttributeModel:
    """MobileNetV2 (``spec.size_hw`` pixels, uint8 input) with a sigmoid head, split at ``spec.split_layer``.

    The returned model's parts share weights: ``full`` (images -> probabilities), ``lower`` (images -> cached
    features, frozen) and ``trainer`` (features -> probabilities); the upper backbone starts frozen.
    Raises FacialAttrError for a missing weights file or an unknown split layer.
    """
    base = _backbone(spec)
    try:
        split = base.get_layer(spec.split_layer).output
    except ValueError:
        raise FacialAttrError(f"MobileNetV2 has no layer {spec.split_layer!r} to split at") from None
    lower_backbone = keras.Model(base.input, split, name="backbone_lower")
    upper = keras.Model(split, base.output, name="backbone_upper")

    normalise = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    drop = keras.layers.Dropout(spec.dropout, name="head_dropout")
    dense = keras.layers.Dense(spec.num_outputs, activation="sigmoid", name=OUTPUT_NAME)

    h, w = spec.size_hw
    images = keras.Input((h, w, 3), dtype="uint8", name=INPUT_NAME)
    lower_out = lower_backbone(normalise(images))
    lower = keras.Model(images, lower_out, name="cache_lower")
    full = keras.Model(images, dense(drop(pool(upper(lower_out)))), name="facial_attributes")

    features = keras.Input(tuple(split.shape[1:]), name="cached_features")
    trainer = keras.Model(features, dense(drop(pool(upper(features)))), name="upper_and_head")
    lower_backbone.trainable = False
    model = AttributeModel(full=full, lower=lower, trainer=trainer, upper=upper, spec=spec)
    model.set_upper_trainable(False)
    log.info("MobileNetV2 %sx%s alpha %s split at %s %s", h, w, spec.alpha, spec.split_layer, tuple(split.shape[1:]))
    return model


def load_whole_model_weights(model: AttributeModel, path: str | Path) -> None:
    """Warm-start ``model`` from another run's whole-model weights (``checkpoints/finetune/best.weights.h5``).

    MobileNetV2's weights do not depend on the input size, so a 128 px run can start a 160 px one.
    Raises FacialAttrError when the file is missing or holds another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FacialAttrError(f"init_weights file {path} does not exist")
    # Keras only warns when parts of the file match no layer and keeps those layers' fresh weights.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.full.load_weights(path)
        except ValueError as exc:
            raise FacialAttrError(f"init_weights {path} does not fit this model: {exc}") from exc
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise FacialAttrError(f"init_weights {path} does not fit this model: {skipped[0]}")
    log.info("warm start from %s", path)


def shift_output_logits(model: keras.Model, shift) -> None:
    """Add ``shift`` (one value per attribute) to the bias of ``model``'s sigmoid head, i.e. to its logits."""
    bias = model.get_layer(OUTPUT_NAME).bias
    bias.assign(bias.numpy() + np.asarray(shift, dtype=bias.numpy().dtype))


def batchnorm_layers(model: AttributeModel) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of the backbone, lower part first (the head has none)."""
    return [layer for layer in model.lower.get_layer("backbone_lower").layers + model.upper.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def set_batchnorm_momentum(model: AttributeModel, momentum: float) -> None:
    """Keras' MobileNetV2 ships momentum 0.999: after a fine-tune of ~1,000 steps its moving
    statistics still describe ImageNet-era activations (docs/MODEL_CARD.md, Recipe: 79.0 % val
    accuracy after a 2-epoch fine-tune)."""
    if not 0.0 <= momentum < 1.0:
        raise FacialAttrError(f"BatchNorm momentum must be in [0, 1), got {momentum}")
    for layer in batchnorm_layers(model):
        layer.momentum = momentum


def reestimate_batchnorm(model: AttributeModel, batches) -> int:
    """Replace every BatchNorm's moving statistics by their average over ``batches`` (uint8 images).

    Forward passes in training mode, no weight update; momentum (k-1)/k at the k-th batch
    makes the moving value the plain mean of the batch statistics. Returns the batch count.
    """
    layers = batchnorm_layers(model)
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    count = 0
    try:
        for layer in layers:
            layer.trainable = True
        for count, images in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = (count - 1) / count
            model.full(images, training=True)
    finally:
        for layer, (trainable, momentum) in zip(layers, saved, strict=True):
            layer.trainable, layer.momentum = trainable, momentum
    return count


def init_batchnorm_from_data(model: AttributeModel, images) -> None:
    """Set every BatchNorm's statistics from one batch, for randomly initialised backbones.

    Untrained statistics are (0, 1) while a random MobileNetV2's activations shrink
    layer by layer, so in inference mode its output is a constant. One forward pass
    in training mode (data-dependent initialisation) fixes that.
    """
    reestimate_batchnorm(model, [images])


def split_shape(model: AttributeModel) -> tuple[int, ...]:
    """Shape of the cached features at the split layer, without the batch dimension (H, W, C)."""
    return tuple(int(d) for d in model.trainer.input.shape[1:])
