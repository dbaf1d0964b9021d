"""A same-architecture stand-in for the shipped model, for measuring speed before it is trained.

Speed depends on the architecture and the input size, not on the weights, so an
untrained network measures the same as the trained one. The stand-in is the
training code's own model (``training.model.build_model``: MobileNetV2 width 1.0,
uint8 input rescaled inside, 40 sigmoid outputs) with random, ImageNet-free
weights, its BatchNorm statistics initialised from one batch of photographs
(``init_batchnorm_from_data``: an untrained net with default statistics answers
0.5 everywhere and hides batching mistakes), written as a training run would be
and published by the real exporter behind its parity gate.

Every benchmark prints whether it ran on a stand-in (``model_summary.stand_in``).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from facialattr import MODEL_NAME, repository
from facialattr.contract import ModelContract, Preprocessing

log = logging.getLogger(__name__)

DEFAULT_STANDIN_DIR = Path(".cache/bench/standin")
# The contract summary's mark of a stand-in, which every report shows.
STAND_IN_KEY = "stand_in"
# Photographs whose single training-mode pass sets the BatchNorm statistics.
_BATCHNORM_IMAGES = 16


@dataclass(frozen=True)
class StandIn:
    """A built stand-in: its Keras file (for the Keras baselines), served ONNX file and repository."""

    keras_path: Path
    onnx_path: Path
    repository: Path
    size: int


def build_standin(out_dir: Path = DEFAULT_STANDIN_DIR, *, size: int = 128, seed: int = 0, rebuild: bool = False) -> StandIn:
    """Build (or reuse) the ``size`` x ``size`` pixel stand-in under ``out_dir/<size>/``.

    ``run/`` holds model.keras and contract.json as training writes them; ``repository/`` is
    what ``facialattr export --replace`` publishes from that run (parity-checked). Raises
    ExportError or ParityError when the export refuses the model, FacialAttrError when the
    model cannot be built.
    """
    from facialattr.export.exporter import CONTRACT_FILENAME, KERAS_FILENAME, ExportOptions, export_model

    folder = Path(out_dir) / str(size)
    run_dir, repo = folder / "run", folder / "repository"
    keras_path = run_dir / KERAS_FILENAME
    if rebuild or not keras_path.is_file() or not (repo / MODEL_NAME).is_dir():
        log.info("building the %dx%d MobileNetV2 stand-in in %s", size, size, folder)
        contract = ModelContract(
            preprocessing=Preprocessing(size_hw=(size, size)),
            summary={STAND_IN_KEY: True, "architecture": "MobileNetV2 alpha=1.0, untrained (speed only)"},
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        _untrained_model(contract, seed=seed).save(keras_path)
        (run_dir / CONTRACT_FILENAME).write_text(json.dumps(contract.to_parameters()))
        export_model(run_dir, ExportOptions(repository=repo, replace=True))
    return StandIn(keras_path, repository.load_model(repo).onnx_path(), repo, size)


def _untrained_model(contract: ModelContract, *, seed: int):
    """training.model's network, random weights, BatchNorm statistics from real photographs."""
    import keras

    from facialattr.export.images import sample_photos
    from facialattr.training.model import ModelSpec, build_model, init_batchnorm_from_data

    keras.utils.set_random_seed(seed)
    spec = ModelSpec(size_hw=contract.preprocessing.size_hw, num_outputs=contract.num_attributes, weights=None)
    model = build_model(spec)
    init_batchnorm_from_data(model, sample_photos(contract.preprocessing, count=_BATCHNORM_IMAGES, seed=seed))
    return model.full


def is_standin(contract: ModelContract) -> bool:
    """Whether a model is a stand-in (its contract summary says so), not a trained model."""
    return bool(contract.summary.get(STAND_IN_KEY))


def main(argv: list[str] | None = None) -> None:
    """``python -m facialattr.benchmarks.standin --size 128 160``: build the stand-ins, print where they are."""
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
