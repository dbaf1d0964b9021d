"""``facialattr evaluate RUN_DIR|MODEL DATA_DIR``: score a trained model on a partition.

Images go through the same crop/resize as serving and into the uint8 model. When
the run's ``contract.json`` sits beside the model, its thresholds are used (and
reported as shipped); otherwise thresholds are calibrated on the scored set itself
and the table says so. The 2-fold cross-calibrated column is always reported.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from facialattr.contract import ModelContract
from facialattr.errors import FacialAttrError
from facialattr.training import metrics as M
from facialattr.training.report import render_markdown, score_report, to_jsonable

log = logging.getLogger(__name__)


def locate_model(path: Path) -> tuple[Path, ModelContract | None]:
    """(model.keras path, its run's contract or None) from a run directory or a model.keras file.

    Raises FacialAttrError when there is no model.keras; ContractError when contract.json is malformed.
    """
    model_path = path / "model.keras" if path.is_dir() else path
    if not model_path.is_file():
        raise FacialAttrError(f"{model_path}: no model.keras there")
    contract_path = model_path.parent / "contract.json"
    contract = None
    if contract_path.exists():
        contract = ModelContract.from_parameters(json.loads(contract_path.read_text()))
    return model_path, contract


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
    """Metrics of a run on ``split``; with ``scores_file`` the probabilities are the served model's."""
    import keras

    from facialattr.training.data import load_celeba, require_splits
    from facialattr.training.pipeline import configure_threads

    configure_threads(threads)
    model_path, contract = locate_model(Path(model_or_run))
    splits = load_celeba(data_dir)
    (part,) = require_splits(splits, split)
    if scores_file is not None:
        scores = read_served_scores(scores_file, part, part.attribute_names)
    else:
        model = keras.models.load_model(model_path, compile=False)
        scores = predict_split(model, part, tuple(int(d) for d in model.input.shape[1:3]))
    if contract is not None:
        thresholds, source = np.asarray(contract.thresholds), "shipped thresholds from contract.json"
        priors = np.asarray(contract.priors)
    else:
        thresholds, source = M.calibrate_thresholds(part.labels, scores), f"thresholds calibrated on this {split} set"
        priors = splits["train"].priors if "train" in splits else part.priors
    report = score_report(part.labels, scores, part.identities, priors, thresholds)
    means = {k: M.summarise(v) for k, v in report.items()}
    scored_by = f"served scores in {scores_file}" if scores_file is not None else str(model_path)
    summary = {"model": scored_by, "data": f"{data_dir} {split}: {len(part)} images", "thresholds": source,
               "mean_accuracy_at_0.5": round(means["at_0.5"]["accuracy"], 4),
               "mean_balanced_accuracy_at_thresholds": round(means["at_thresholds_in_sample"]["balanced_accuracy"], 4),
               "mean_balanced_accuracy_cross_calibrated": round(means["cross_calibrated_2fold"]["balanced_accuracy"], 4)}
    out = Path(out_dir) if out_dir else model_path.parent / f"evaluation_{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"summary": summary, "means": means,
                                                  "tables": to_jsonable(report, part.attribute_names)}, indent=1))
    (out / "metrics.md").write_text(render_markdown(part.attribute_names, report, title=f"Metrics on {split}",
                                                    note=f"{summary['model']}; {summary['data']}; {source}."))
    log.info("metrics written to %s", out)
    return {"summary": summary, "means": means}
