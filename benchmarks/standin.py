"""A same-architecture stand-in for the shipped model, for measuring speed before it is trained.

Speed depends on the architecture and the input size, not on the weights, so an
untrained MobileNetV2 (width 1.0, uint8 input rescaled inside, 40 sigmoid outputs)
measures the same as the trained one. Its BatchNorm statistics are set from one
training-mode pass so activations do not vanish (an untrained net with default
statistics answers 0.5 everywhere and hides batching mistakes).

Every benchmark prints whether it ran on a stand-in (``model_summary.stand_in``).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr import repository, triton_config
from facialattr.contract import INPUT_NAME, OUTPUT_NAME, ModelContract, Preprocessing

log = logging.getLogger(__name__)

DEFAULT_STANDIN_DIR = Path(".cache/bench/standin")
KERAS_FILENAME = "model.keras"


@dataclass(frozen=True)
class StandIn:
    keras_path: Path
    onnx_path: Path
    repository: Path
    size: int


def build_keras_model(size: int, *, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), dtype="uint8", name=INPUT_NAME)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=None, pooling="avg"
    )
    x = base(x)
    outputs = keras.layers.Dense(40, activation="sigmoid", name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, outputs, name="facialattr_standin")
    _set_batchnorm_statistics(model, size, seed=seed)
    return model


def _set_batchnorm_statistics(model, size: int, *, seed: int) -> None:
    """One training-mode pass with momentum 0, so moving statistics equal that batch's."""
    import keras

    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    images = np.random.default_rng(seed).integers(0, 256, size=(16, size, size, 3), dtype=np.uint8)
    model(images, training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def convert_to_onnx(model, size: int, path: Path) -> Path:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, size, size, 3), tf.uint8, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    _rename_output(proto, OUTPUT_NAME)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def _rename_output(proto, name: str) -> None:
    """tf2onnx names the output after the Keras tensor; the contract wants ``probabilities``."""
    old = proto.graph.output[0].name
    if old == name:
        return
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


def build_standin(out_dir: Path = DEFAULT_STANDIN_DIR, *, size: int = 128, seed: int = 0, rebuild: bool = False) -> StandIn:
    """Build (or reuse) ``out_dir/<size>/``: model.keras, model.onnx and a Triton repository."""
    folder = Path(out_dir) / str(size)
    standin = StandIn(folder / KERAS_FILENAME, folder / triton_config.ONNX_FILENAME, folder / "repository", size)
    if not rebuild and standin.keras_path.is_file() and (standin.repository / "facial_attributes").is_dir():
        return standin
    folder.mkdir(parents=True, exist_ok=True)
    log.info("building the %dx%d MobileNetV2 stand-in in %s", size, size, folder)
    model = build_keras_model(size, seed=seed)
    model.save(standin.keras_path)
    convert_to_onnx(model, size, standin.onnx_path)
    contract = ModelContract(
        preprocessing=Preprocessing(size_hw=(size, size)),
        summary={"stand_in": True, "architecture": "MobileNetV2 alpha=1.0, untrained (speed only)"},
    )
    if standin.repository.exists():
        import shutil

        shutil.rmtree(standin.repository)
    repository.write_model(standin.repository, standin.onnx_path, contract)
    return standin


def is_standin(entry: repository.ModelEntry) -> bool:
    return bool(entry.contract.summary.get("stand_in"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the untrained same-architecture stand-in model.")
    parser.add_argument("--out", type=Path, default=DEFAULT_STANDIN_DIR)
    parser.add_argument("--size", type=int, nargs="+", default=[128, 160])
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for size in args.size:
        s = build_standin(args.out, size=size, rebuild=args.rebuild)
        print(f"stand-in {size}x{size}: {s.repository} (keras: {s.keras_path})")


if __name__ == "__main__":
    main()
