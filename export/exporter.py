"""Export a trained Keras model into the Triton model repository, behind the parity gate.

Order matters: convert into a private temp folder, gate, and only then publish, so a
failed export never leaves a half-written version for the server to pick up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facialattr import MODEL_NAME, repository, triton_config
from facialattr.contract import ModelContract
from facialattr.encoded import EncodedModelConfig
from facialattr.errors import ExportError, FacialAttrError
from facialattr.export import convert, images, parity
from facialattr.export.quantize import (
    DEFAULT_RECIPES,
    Int8Criteria,
    Int8Report,
    QuantizeOptions,
    compare_int8,
    quantize_int8,
)

log = logging.getLogger(__name__)

KERAS_FILENAME = "model.keras"
CONTRACT_FILENAME = "contract.json"
INT8_MODEL_NAME = f"{MODEL_NAME}_int8"


@dataclass(frozen=True)
class ExportOptions:
    """What ``facialattr export`` was asked to do; raises ExportError for counts below 1 or a tolerance <= 0."""

    repository: Path
    version: int | None = None
    # Regenerate the model folder from scratch (old versions removed) instead of adding a version.
    replace: bool = False
    opset: int = convert.OPSET
    max_batch_size: int = triton_config.DEFAULT_MAX_BATCH_SIZE
    instance_count: int = triton_config.DEFAULT_INSTANCE_COUNT
    tensorrt_fp16: bool = False
    parity_images: Path | None = None
    parity_tolerance: float = parity.DEFAULT_TOLERANCE
    int8_calibration: Path | None = None
    int8_eval_images: int | None = None
    int8_calibration_images: int = 256
    int8_recipes: tuple[QuantizeOptions, ...] = DEFAULT_RECIPES
    int8_criteria: Int8Criteria = field(default_factory=Int8Criteria)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "instance_count", "version", "int8_eval_images", "int8_calibration_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExportError(f"{name} must be at least 1, got {value}")
        if not self.int8_recipes:
            raise ExportError("int8_recipes must name at least one quantization recipe")
        if self.parity_tolerance <= 0:
            raise ExportError(f"parity_tolerance must be positive, got {self.parity_tolerance}")


@dataclass(frozen=True)
class ExportResult:
    """The published FP32 version folder, its parity report, and the INT8 attempts (if asked)."""

    version_dir: Path
    parity: parity.ParityReport
    # Every INT8 recipe tried, in order; the last one passed the gate if int8_version_dir is set.
    int8_attempts: tuple[Int8Report, ...] = ()
    int8_version_dir: Path | None = None

    @property
    def int8(self) -> Int8Report | None:
        """The last INT8 attempt (the one that passed, if any passed), or None when INT8 was not asked for."""
        return self.int8_attempts[-1] if self.int8_attempts else None


def resolve_sources(model: Path, contract: Path | None = None) -> tuple[Path, Path]:
    """(model.keras, contract.json) from a training run folder or a ``.keras`` file plus its contract.

    Raises ExportError naming the path when either file is missing.
    """
    model = Path(model)
    if model.is_dir():
        keras_path, contract = model / KERAS_FILENAME, Path(contract or model / CONTRACT_FILENAME)
        if not keras_path.is_file():
            raise ExportError(f"{model}: training run folder has no {KERAS_FILENAME}")
    elif model.suffix == ".keras" and model.is_file():
        keras_path = model
        if contract is None:
            raise ExportError(f"{model}: a .keras file needs its contract: pass --contract {CONTRACT_FILENAME}")
    else:
        raise ExportError(f"{model}: neither a training run folder nor a .keras file")
    if not Path(contract).is_file():
        raise ExportError(f"{contract}: model contract not found (training writes {CONTRACT_FILENAME} next to {KERAS_FILENAME})")
    return keras_path, Path(contract)


def load_contract(path: Path) -> ModelContract:
    """The contract in a run's ``contract.json``; raises ExportError naming ``path`` when unreadable or invalid."""
    try:
        params = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable JSON contract: {exc}") from exc
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise ExportError(f"{path}: expected a JSON object of string parameters (ModelContract.to_parameters())")
    try:
        return ModelContract.from_parameters(params)
    except FacialAttrError as exc:
        raise ExportError(f"{path}: {exc}") from exc


def check_publishable(repo: Path, contract: ModelContract, *, version: int | None,
                      model_config: triton_config.ModelConfig | None = None) -> None:
    """Before any work: the version must be free, and older versions must stay servable (same tensor shapes).

    ``model_config`` (default: the defaults) is the config the new model would be served with.
    Raises ExportError when the version exists or the tensors' names or dims would change.
    """
    model_config = model_config or triton_config.ModelConfig()
    name = model_config.name
    model_dir = Path(repo) / name
    if version is not None and model_dir.is_dir() and version in repository.version_numbers(model_dir):
        raise ExportError(f"{model_dir}/{version} exists; choose another --version, or --replace")
    config_path = model_dir / "config.pbtxt"
    if not config_path.is_file():
        return
    old = triton_config.load(config_path)
    new = model_config.to_proto(contract)
    for kind in ("input", "output"):
        old_t, new_t = getattr(old, kind), getattr(new, kind)
        if [(t.name, list(t.dims)) for t in old_t] != [(t.name, list(t.dims)) for t in new_t]:
            raise ExportError(
                f"{config_path}: the existing versions have {kind} {[(t.name, list(t.dims)) for t in old_t]}, "
                f"the new model {[(t.name, list(t.dims)) for t in new_t]}; older versions would stop working. "
                "Use --replace to regenerate the model folder, or export into another repository"
            )


def export_model(model: Path, options: ExportOptions, *, contract_path: Path | None = None) -> ExportResult:
    """Convert, gate, and publish one trained model (plus its INT8 variant when asked and it qualifies).

    Raises ExportError for missing or inconsistent inputs and failed conversion, ParityError when
    ONNX Runtime does not reproduce Keras within ``options.parity_tolerance``.
    """
    keras_path, contract_path = resolve_sources(model, contract_path)
    contract = load_contract(contract_path)
    if not options.replace:
        check_publishable(options.repository, contract, version=options.version, model_config=_fp32_config(options))
    keras_model = convert.load_keras_model(keras_path)
    convert.check_keras_interface(keras_model, contract)
    with tempfile.TemporaryDirectory(prefix="facialattr-export-") as tmp:
        onnx_path = convert.convert_to_onnx(keras_model, Path(tmp) / "model.onnx", contract, opset=options.opset)
        convert.check_onnx_interface(onnx_path, contract)
        gate = parity.check_parity(keras_model, onnx_path, _parity_images(contract, options),
                                   max_batch_size=options.max_batch_size, tolerance=options.parity_tolerance)
        attempts, int8_path = (), None
        if options.int8_calibration is not None:
            int8_path = Path(tmp) / "model_int8.onnx"
            attempts = _quantize_and_compare(onnx_path, int8_path, contract, options)
        export_info = _export_info(keras_path, options, gate)
        fp32_contract = _with_summary(contract, export=export_info)
        version_dir = _publish(onnx_path, fp32_contract, _fp32_config(options), options)
        # The bytes twin serves the same contract: rewritten with every FP32 publish, never left behind.
        repository.write_encoded_model(options.repository, fp32_contract, config=_encoded_config(options))
        int8_dir = None
        if attempts and attempts[-1].passed:
            int8_contract = _with_summary(contract, export=export_info, int8=attempts[-1].as_dict(),
                                          quantized_from={"model": MODEL_NAME, "version": int(version_dir.name)})
            # Its own version sequence: an explicit --version names the FP32 model's version only.
            int8_options = options if options.replace else dataclasses.replace(options, version=None)
            int8_dir = _publish(int8_path, int8_contract, _int8_config(options), int8_options)
        elif options.replace:
            _remove_model_folder(options.repository / INT8_MODEL_NAME)
    return ExportResult(version_dir=version_dir, parity=gate, int8_attempts=attempts, int8_version_dir=int8_dir)


def _parity_images(contract: ModelContract, options: ExportOptions):
    count = options.max_batch_size
    if options.parity_images is not None:
        return images.load_folder(options.parity_images, contract.preprocessing, count=count)
    return images.sample_photos(contract.preprocessing, count=count)


def _quantize_and_compare(onnx_path: Path, int8_path: Path, contract: ModelContract,
                          options: ExportOptions) -> tuple[Int8Report, ...]:
    """Try each recipe until one passes the gate; ``int8_path`` then holds that one. Returns every attempt."""
    import numpy as np

    from facialattr.training.data import load_celeba, require_splits

    (split,) = require_splits(load_celeba(options.int8_calibration), "val")
    if split.attribute_names != contract.attribute_names:
        raise ExportError(f"{options.int8_calibration}: its attributes differ from the model contract's")
    n_cal = options.int8_calibration_images
    if len(split) < n_cal + 1:
        raise ExportError(f"{options.int8_calibration}: the val split has {len(split)} images, INT8 needs more than {n_cal}")
    # Calibrate and evaluate on disjoint parts of val, so the gate does not grade its own homework.
    stop = len(split) if options.int8_eval_images is None else min(len(split), n_cal + options.int8_eval_images)
    evaluation = split.subset(np.arange(n_cal, stop))
    log.info("loading %d calibration and %d evaluation images", n_cal, len(evaluation))
    calibration = images.load_files(split.paths[:n_cal], contract.preprocessing)
    eval_images = images.load_files(evaluation.paths, contract.preprocessing)
    fp32_probabilities = parity.run_onnx(parity.onnx_session(onnx_path), eval_images, batch_size=64)
    reports = []
    for recipe in options.int8_recipes:
        quantize_int8(onnx_path, int8_path, calibration, options=recipe)
        report = compare_int8(onnx_path, int8_path, eval_images, evaluation.labels, contract.thresholds,
                              num_calibration_images=n_cal, recipe=recipe.describe(),
                              fp32_probabilities=fp32_probabilities, criteria=options.int8_criteria)
        reports.append(report)
        if report.passed:
            log.info("INT8 gate passed: %s", report.describe())
            break
        log.warning("INT8 gate failed (%s): %s", "; ".join(report.failures()), report.describe())
    return tuple(reports)


def _export_info(keras_path: Path, options: ExportOptions, gate: parity.ParityReport) -> dict[str, Any]:
    import tf2onnx

    return {
        # The run folder and file, not the machine's path: the repository ships to other machines.
        "source": f"{keras_path.resolve().parent.name}/{keras_path.name}",
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "opset": options.opset,
        "converter": f"tf2onnx {tf2onnx.__version__}",
        "parity": gate.as_dict(),
    }


def _with_summary(contract: ModelContract, **extra: Any) -> ModelContract:
    return dataclasses.replace(contract, summary={**contract.summary, **extra})


def _fp32_config(options: ExportOptions) -> triton_config.ModelConfig:
    return triton_config.ModelConfig(
        max_batch_size=options.max_batch_size, tensorrt_fp16=options.tensorrt_fp16,
        instance_group=(triton_config.InstanceGroup(count=options.instance_count),),
    )


def _encoded_config(options: ExportOptions) -> EncodedModelConfig:
    return EncodedModelConfig(max_batch_size=options.max_batch_size, instance_count=options.instance_count)


def _int8_config(options: ExportOptions) -> triton_config.ModelConfig:
    # QDQ INT8 is the CPU deployment's model: pin it to CPU instances, no TensorRT section.
    return triton_config.ModelConfig(
        name=INT8_MODEL_NAME, max_batch_size=options.max_batch_size,
        instance_group=(triton_config.InstanceGroup(count=options.instance_count, kind="KIND_CPU"),),
    )


def _publish(onnx_path: Path, contract: ModelContract, config: triton_config.ModelConfig, options: ExportOptions) -> Path:
    repo = Path(options.repository)
    repo.mkdir(parents=True, exist_ok=True)
    if not options.replace:
        target = repository.write_model(repo, onnx_path, contract, model_config=config, version=options.version)
        _write_version_record(target, contract)
        return target
    # Build the new model folder beside the old one, then swap, so the server never sees half of it.
    staging = Path(tempfile.mkdtemp(dir=repo, prefix=".staging-"))
    try:
        staged = repository.write_model(staging, onnx_path, contract, model_config=config, version=options.version or 1)
        _write_version_record(staged, contract)
        final = repo / config.name
        previous = staging / "previous"
        if final.exists():
            os.replace(final, previous)
        try:
            os.replace(staging / config.name, final)
        except OSError:
            if previous.exists():
                os.replace(previous, final)
            raise
        log.info("replaced %s completely (now version %s only)", final, staged.name)
        return final / staged.name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_version_record(version_dir: Path, contract: ModelContract) -> None:
    # config.pbtxt holds only the newest contract; each version keeps its own for rollback.
    (version_dir / CONTRACT_FILENAME).write_text(json.dumps(contract.to_parameters(), indent=1) + "\n")


def _remove_model_folder(path: Path) -> None:
    if path.exists():
        log.warning("removing %s: it was quantized from the model being replaced", path)
        shutil.rmtree(path)
