"""What a finished run leaves behind: metrics tables, calibrated thresholds, the contract.

``contract.json`` is ``json.dumps(ModelContract(...).to_parameters())``, the exact
Triton parameters export puts into config.pbtxt. Thresholds maximise each
attribute's balanced accuracy on val; the cross-calibrated column (fit on one
identity-disjoint half of val, measured on the other) is the honest estimate of
what those thresholds do on unseen people.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np

from facialattr.contract import CELEBA_FACE_CROP_XYXY, ModelContract, Preprocessing
from facialattr.training import metrics as M

log = logging.getLogger(__name__)


def score_report(labels, scores, identities, priors, thresholds) -> dict:
    """All metric tables for one set of predictions (per attribute arrays)."""
    return {
        "baseline_majority": M.majority_baseline(labels, priors),
        "at_0.5": M.evaluate_scores(labels, scores, 0.5),
        "at_thresholds_in_sample": M.evaluate_scores(labels, scores, thresholds),
        "cross_calibrated_2fold": M.cross_calibrated(labels, scores, identities),
    }


def render_markdown(names, report: dict, *, title: str, note: str = "") -> str:
    """The metrics tables of :func:`score_report` as Markdown, values in percent, one row per attribute in ``names`` order."""
    base, half, cal, cross = (report[k] for k in ("baseline_majority", "at_0.5", "at_thresholds_in_sample",
                                                  "cross_calibrated_2fold"))
    columns = {
        "baseline acc": base["accuracy"], "acc@0.5": half["accuracy"], "bal.acc@0.5": half["balanced_accuracy"],
        "F1@0.5": half["f1"], "ROC AUC": half["roc_auc"], "acc@thr": cal["accuracy"],
        "bal.acc@thr (in-sample)": cal["balanced_accuracy"], "bal.acc@thr (2-fold cross)": cross["balanced_accuracy"],
        "F1@thr": cal["f1"],
    }
    return (f"# {title}\n\n{note}\n\nValues in percent. `thr` = per-attribute thresholds chosen to maximise "
            "balanced accuracy on val (in-sample); the 2-fold cross column fits them on one identity-disjoint "
            "half of val and measures on the other. Baseline = always the training-majority class.\n\n"
            + M.markdown_table(names, columns) + "\n")


def to_jsonable(report: dict, names) -> dict:
    """The report as plain floats: per table, the means and each attribute's values by name."""
    return {table: {"mean": M.summarise(values),
                    "per_attribute": {n: {k: float(v[i]) for k, v in values.items()} for i, n in enumerate(names)}}
            for table, values in report.items()}


def finish_run(run_dir: Path, full_model, config, train_split, val_split, val_scores, timings: dict) -> dict:
    """Calibrate thresholds on val and write the run's model.keras, contract.json, metrics.json/.md, val scores and curves.

    ``val_scores`` are the model's val probabilities [N, attributes]; ``timings`` (seconds) go into metrics.json.
    Returns the summary, timings and mean metrics.
    """
    names = train_split.attribute_names
    priors = np.clip(train_split.priors, 1e-4, 1 - 1e-4)
    thresholds = M.calibrate_thresholds(val_split.labels, val_scores)
    report = score_report(val_split.labels, val_scores, val_split.identities, priors, thresholds)
    means = {k: M.summarise(v) for k, v in report.items()}
    summary = {
        "data": f"CelebA subset: {len(train_split)} train / {len(val_split)} val images",
        "recipe": f"MobileNetV2 a{config.alpha} {config.size_hw[0]}x{config.size_hw[1]}, {config.schedule} schedule "
                  f"(split {config.split_layer}), loss {config.loss.kind}",
        "val_mean_accuracy_at_0.5": round(means["at_0.5"]["accuracy"], 4),
        "val_mean_balanced_accuracy_at_thresholds": round(means["at_thresholds_in_sample"]["balanced_accuracy"], 4),
        "val_mean_balanced_accuracy_cross_calibrated": round(means["cross_calibrated_2fold"]["balanced_accuracy"], 4),
        "thresholds_maximise": "per-attribute balanced accuracy on val",
        "date": dt.date.today().isoformat(),
    }
    contract = ModelContract(
        attribute_names=names,
        preprocessing=Preprocessing(size_hw=tuple(config.size_hw), crop_box_xyxy=CELEBA_FACE_CROP_XYXY, channel_order="RGB"),
        thresholds=tuple(float(t) for t in thresholds), priors=tuple(float(p) for p in priors), summary=summary)
    full_model.save(run_dir / "model.keras")
    (run_dir / "contract.json").write_text(json.dumps(contract.to_parameters()))
    (run_dir / "metrics.json").write_text(json.dumps(
        {"summary": summary, "timings": timings, "means": means, "tables": to_jsonable(report, names)}, indent=1))
    (run_dir / "metrics.md").write_text(render_markdown(names, report, title=f"Validation metrics — {run_dir.name}",
                                                        note=f"{summary['recipe']}; {summary['data']}."))
    np.save(run_dir / "val_scores.npy", val_scores.astype(np.float32))
    plot_curves(run_dir)
    log.info("run finished: val mean acc@0.5 %.4f, bal.acc@thr %.4f (cross %.4f); %s",
             summary["val_mean_accuracy_at_0.5"], summary["val_mean_balanced_accuracy_at_thresholds"],
             summary["val_mean_balanced_accuracy_cross_calibrated"], run_dir / "model.keras")
    return {"summary": summary, "timings": timings, "means": means}


def read_history(run_dir: Path) -> list[dict]:
    """The per-epoch rows of the run's history CSVs (head phase first, then fine-tune), each tagged with its phase."""
    rows: list[dict] = []
    for phase in ("head", "finetune"):
        path = run_dir / f"history_{phase}.csv"
        if path.exists():
            with path.open() as f:
                rows += [dict(r, phase=phase) for r in csv.DictReader(f)]
    return rows


def plot_curves(run_dir: Path) -> Path | None:
    """Write curves.png (loss and val metrics per epoch) into ``run_dir``; returns it, or None without any history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(run_dir)
    if not rows:
        return None
    x = np.arange(1, len(rows) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(x, [float(r["loss"]) for r in rows], "o-", label="train loss")
    ax1.set_xlabel("epoch (head, then fine-tune)")
    ax1.legend()
    for key in ("val_mean_auc", "val_mean_accuracy", "val_mean_balanced_accuracy"):
        if key in rows[0]:
            ax2.plot(x, [float(r[key]) for r in rows], "o-", label=key)
    heads = sum(r["phase"] == "head" for r in rows)
    for ax in (ax1, ax2):
        if heads:
            ax.axvline(heads + 0.5, color="grey", ls="--", lw=1)
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.suptitle(f"training curves — {run_dir.name}")
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
