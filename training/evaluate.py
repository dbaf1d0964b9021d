"""``facialattr evaluate MODEL DATA_DIR``: score a trained or served model on a partition.

MODEL is a training run folder or model.keras file, or (with ``--scores``) a model folder
of a Triton model repository or one of its version folders. Images go through the same
crop/resize as serving and into the uint8 model; with ``--scores`` the served model's
probabilities are read from a ``facialattr score --out X.jsonl`` file instead, and
nothing needs TensorFlow. Shipped thresholds come from the run's ``contract.json`` or
the repository's ``config.pbtxt``; without either, thresholds are calibrated on the scored
set itself and the table says so. The 2-fold cross-calibrated column is always reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr import MODEL_NAME, repository
from facialattr.contract import ModelContract
from facialattr.errors import FacialAttrError
from facialattr.training import metrics as M
from facialattr.training.report import render_markdown, score_report, to_jsonable

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.pbtxt"
CONTRACT_FILENAME = "contract.json"


@dataclass(frozen=True)
class EvaluationTarget:
    """What ``evaluate`` was pointed at.

    ``keras_path`` is None for a model repository (ONNX only: its served scores are evaluated);
    ``contract`` holds the shipped thresholds (None: calibrate on the scored set), read from
    ``contract_path``; ``label`` names the model in the report; ``default_out`` is where metrics
    go without ``--out``.
    """

    keras_path: Path | None
    contract: ModelContract | None
    contract_path: Path | None
    label: str
    default_out: Path


def locate_model(path: Path) -> tuple[Path, ModelContract | None]:
    """(model.keras path, its run's contract or None) from a run directory or a model.keras file.

    Raises FacialAttrError when there is no model.keras; ContractError when contract.json is malformed.
    """
    model_path = path / "model.keras" if path.is_dir() else path
    if not model_path.is_file():
        raise FacialAttrError(f"{model_path}: no model.keras there")
    contract_path = model_path.parent / CONTRACT_FILENAME
    contract = None
    if contract_path.exists():
        contract = ModelContract.from_parameters(json.loads(contract_path.read_text()))
    return model_path, contract


def repository_folder(path: Path) -> tuple[Path, int | None] | None:
    """(model folder, version or None) when ``path`` is a Triton repository's model folder or a version folder in one.

    A numbered path in a model folder counts even when absent, so a wrong version is named as such.
    """
    if (path / CONFIG_FILENAME).is_file():
        return path, None
    if path.name.isdigit() and (path.parent / CONFIG_FILENAME).is_file():
        return path.parent, int(path.name)
    return None


def locate_repository_model(model_folder: Path, version: int | None, *, split: str) -> EvaluationTarget:
    """The served contract of ``model_folder`` (validated as Triton would load it) for ``version`` (default: the latest).

    ``config.pbtxt`` holds the newest version's contract; an older version is evaluated with the
    ``contract.json`` export keeps in its folder for rollback. Raises ModelRepositoryError when the
    folder is not a valid model of its repository, FacialAttrError when the version is absent or an
    older version has no contract of its own.
    """
    entry = repository.load_model(model_folder.parent, model_folder.name)
    version = entry.latest_version if version is None else version
    if version not in entry.versions:
        raise FacialAttrError(f"{model_folder}: no version {version} (has {', '.join(map(str, entry.versions))})")
    if version == entry.latest_version:
        contract, contract_path = entry.contract, model_folder / CONFIG_FILENAME
    else:
        contract_path = model_folder / str(version) / CONTRACT_FILENAME
        if not contract_path.is_file():
            raise FacialAttrError(f"{contract_path}: missing; {model_folder / CONFIG_FILENAME} holds only the contract "
                                  f"of version {entry.latest_version}, so version {version}'s thresholds are unknown")
        contract = ModelContract.from_parameters(json.loads(contract_path.read_text()))
    h, w = contract.preprocessing.size_hw
    # The repository is what a server reads (often read-only, always not the place for reports): write to the caller's folder.
    return EvaluationTarget(keras_path=None, contract=contract, contract_path=contract_path,
                            label=f"{model_folder.name} version {version}, {h}x{w} input",
                            default_out=Path(f"evaluation_{model_folder.name}_v{version}_{split}"))


def locate_target(path: Path, *, split: str, served_scores: bool) -> EvaluationTarget:
    """What ``evaluate`` scores from MODEL ``path``; ``served_scores`` says whether ``--scores`` was given.

    Raises FacialAttrError when ``path`` holds no model, or is a repository folder without ``--scores``
    (the repository holds ONNX, not the Keras model this command runs).
    """
    path = Path(path)
    found = repository_folder(path)
    if found is not None:
        if not served_scores:
            raise FacialAttrError(
                f"{path} is a Triton model repository folder (ONNX, no Keras model to run): evaluate the served "
                "model's probabilities with --scores X.jsonl (written by `facialattr score IMAGES --out X.jsonl`), "
                "or pass a training run folder or model.keras")
        return locate_repository_model(*found, split=split)
    if path.is_dir() and any((child / CONFIG_FILENAME).is_file() for child in path.iterdir() if child.is_dir()):
        raise FacialAttrError(f"{path} is a model repository: pass one of its model folders, "
                              f"e.g. {path / MODEL_NAME}")
    keras_path, contract = locate_model(path)
    return EvaluationTarget(keras_path=keras_path, contract=contract,
                            contract_path=keras_path.parent / CONTRACT_FILENAME if contract else None,
                            label=str(keras_path), default_out=keras_path.parent / f"evaluation_{split}")


def batched(array: np.ndarray, batch_size: int):
    """Consecutive slices of ``array`` of at most ``batch_size`` rows (views, not copies)."""
    return (array[i:i + batch_size] for i in range(0, len(array), batch_size))


def decode_images(paths, size_hw, *, batch_size: int = 64) -> np.ndarray:
    """Every path's face crop as one uint8 array [N, H, W, 3] (the served preprocessing)."""
    from facialattr.training.pipeline import image_dataset

    h, w = size_hw
    if not len(paths):  # tf.constant([]) would be a float tensor, not file names
        return np.zeros((0, h, w, 3), np.uint8)
    return np.concatenate([b.numpy() for b in image_dataset(paths, size_hw, batch_size=batch_size)])


def predict_images(model, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Inference-mode probabilities, by direct calls (no tf.data: safe inside a Keras callback)."""
    out = [model(chunk, training=False).numpy() for chunk in batched(images, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def predict_split(model, split, size_hw, *, batch_size: int = 64) -> np.ndarray:
    """Inference-mode probabilities [N, attributes] for ``split``'s images through tf.data (``size_hw`` in pixels), in split order."""
    from facialattr.training.pipeline import image_dataset

    out = []
    for i, images in enumerate(image_dataset(split.paths, size_hw, batch_size=batch_size), start=1):
        out.append(model(images, training=False).numpy())
        if i % 10 == 0:
            log.info("scored %d/%d images", min(i * batch_size, len(split)), len(split))
    return np.concatenate(out) if out else np.zeros((0, len(split.attribute_names)), np.float32)


def read_served_scores(scores_file: Path, split, attribute_names) -> np.ndarray:
    """Probabilities [N, 40] for ``split``'s images from a ``facialattr score --out X.jsonl`` file.

    Rows are matched by file name; an image missing from the file, or scored as an error,
    is an error here: a partial evaluation would report numbers for another set of images.
    """
    by_name: dict[str, list[float]] = {}
    try:
        with Path(scores_file).open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if row.get("status") == "ok":
                    by_name[Path(row["path"]).name] = [row[name] for name in attribute_names]
    except (OSError, ValueError, KeyError) as exc:
        raise FacialAttrError(f"{scores_file}: not a readable facialattr score JSONL file ({exc})") from exc
    missing = [Path(p).name for p in split.paths if Path(p).name not in by_name]
    if missing:
        raise FacialAttrError(f"{scores_file}: {len(missing)} of {len(split)} images have no ok row "
                              f"(first: {missing[0]}); score the whole split first")
    return np.asarray([by_name[Path(p).name] for p in split.paths], dtype=np.float32)


def evaluate(model_or_run: Path, data_dir: Path, *, split: str = "val", out_dir: Path | None = None,
             threads: int = 2, scores_file: Path | None = None) -> dict:
    """Metrics on ``split``; with ``scores_file`` the probabilities are the served model's and TensorFlow is not loaded.

    ``model_or_run`` is a run folder or model.keras, or with ``scores_file`` also a repository model or version folder.
    """
    from facialattr.training.data import load_celeba, require_splits

    target = locate_target(Path(model_or_run), split=split, served_scores=scores_file is not None)
    splits = load_celeba(data_dir)
    (part,) = require_splits(splits, split)
    contract = target.contract
    if contract is not None and contract.attribute_names != part.attribute_names:
        raise FacialAttrError(f"{target.contract_path} and {data_dir}'s labels name different attributes "
                              "(or another order); they must match to be compared")
    if scores_file is not None:
        scores = read_served_scores(scores_file, part, part.attribute_names)
    else:
        import keras

        from facialattr.training.pipeline import configure_threads

        configure_threads(threads)
        model = keras.models.load_model(target.keras_path, compile=False)
        scores = predict_split(model, part, tuple(int(d) for d in model.input.shape[1:3]))
    if contract is not None:
        thresholds, source = np.asarray(contract.thresholds), f"shipped thresholds from {target.contract_path}"
        priors = np.asarray(contract.priors)
    else:
        thresholds, source = M.calibrate_thresholds(part.labels, scores), f"thresholds calibrated on this {split} set"
        priors = splits["train"].priors if "train" in splits else part.priors
    report = score_report(part.labels, scores, part.identities, priors, thresholds)
    means = {k: M.summarise(v) for k, v in report.items()}
    scored_by = f"served scores in {scores_file} ({target.label})" if scores_file is not None else target.label
    summary = {"model": scored_by, "data": f"{data_dir} {split}: {len(part)} images", "thresholds": source,
               "mean_accuracy_at_0.5": round(means["at_0.5"]["accuracy"], 4),
               "mean_balanced_accuracy_at_thresholds": round(means["at_thresholds_in_sample"]["balanced_accuracy"], 4),
               "mean_balanced_accuracy_cross_calibrated": round(means["cross_calibrated_2fold"]["balanced_accuracy"], 4)}
    out = Path(out_dir) if out_dir else target.default_out
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"summary": summary, "means": means,
                                                  "tables": to_jsonable(report, part.attribute_names)}, indent=1))
    (out / "metrics.md").write_text(render_markdown(part.attribute_names, report, title=f"Metrics on {split}",
                                                    note=f"{summary['model']}; {summary['data']}; {source}."))
    log.info("metrics written to %s", out)
    return {"summary": summary, "means": means, "out": out}
