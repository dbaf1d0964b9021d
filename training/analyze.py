"""Stage-1 analysis of a CelebA-format data set: how imbalanced is each attribute?

Writes ``imbalance.png`` (positive rate per attribute, sorted), ``IMBALANCE.md``
and ``imbalance.json`` (positive rate, imbalance ratio majority:minority, and the
most co-occurring attribute pairs by lift and by count). Labels only: no images
are opened and no TensorFlow is loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from facialattr.training.data import load_celeba, require_splits

log = logging.getLogger(__name__)

TOP_PAIRS = 15


def attribute_stats(labels: np.ndarray, names) -> list[dict]:
    """Per attribute (``labels`` [N, A] of 0/1, ``names`` in column order): positives, positive rate, majority:minority ratio (inf when one class is absent)."""
    rate = labels.mean(axis=0)
    minority = np.minimum(rate, 1 - rate)
    ratio = np.divide(np.maximum(rate, 1 - rate), minority, out=np.full_like(rate, np.inf), where=minority > 0)
    return [{"attribute": n, "positives": int(labels[:, i].sum()), "positive_rate": float(rate[i]),
             "imbalance_ratio": float(ratio[i])} for i, n in enumerate(names)]


def co_occurrence(labels: np.ndarray, names, *, top: int = TOP_PAIRS,
                  min_count: int = 20) -> tuple[list[dict], list[dict]]:
    """The ``top`` pairs by lift P(a,b) / (P(a) P(b)) and the ``top`` by count, among pairs seen at least ``min_count`` times."""
    x = labels.astype(np.float64)
    n = len(x)
    joint = x.T @ x
    rate = x.mean(axis=0)
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if joint[i, j] >= min_count and rate[i] > 0 and rate[j] > 0:
                lift = (joint[i, j] / n) / (rate[i] * rate[j])
                pairs.append({"a": names[i], "b": names[j], "count": int(joint[i, j]),
                              "joint_rate": float(joint[i, j] / n), "lift": float(lift)})
    by_lift = sorted(pairs, key=lambda p: -p["lift"])[:top]
    by_count = sorted(pairs, key=lambda p: -p["count"])[:top]
    return by_lift, by_count


def plot_rates(stats: list[dict], path: Path, *, title: str) -> None:
    """Write the horizontal bar chart of positive rates (%) to ``path`` (PNG); minority classes under 10 % in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(stats, key=lambda s: s["positive_rate"])
    fig, ax = plt.subplots(figsize=(8, 10))
    rates = [100 * s["positive_rate"] for s in ordered]
    colours = ["#c0392b" if min(r, 100 - r) < 10 else "#2c7fb8" for r in rates]
    ax.barh([s["attribute"] for s in ordered], rates, color=colours)
    ax.axvline(50, color="grey", lw=1, ls="--")
    for y, r in enumerate(rates):
        ax.text(r + 0.5, y, f"{r:.1f}", va="center", fontsize=7)
    ax.set_xlabel("positive rate (%) — red: minority class under 10 %")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(stats, by_lift, by_count, *, source: str) -> str:
    """The IMBALANCE.md report: the rates table (sorted), then the pairs by lift and by count."""
    lines = [f"# Attribute imbalance — {source}", "",
             "Positive rate per attribute (sorted) and imbalance ratio = majority / minority class count.",
             "![positive rates](imbalance.png)", "",
             "| attribute | positives | positive rate (%) | imbalance ratio |", "| --- | --- | --- | --- |"]
    for s in sorted(stats, key=lambda s: s["positive_rate"]):
        lines.append(f"| {s['attribute']} | {s['positives']} | {100 * s['positive_rate']:.1f} | {s['imbalance_ratio']:.1f} |")
    lines += ["", "## Most co-occurring pairs (by lift = P(a,b) / P(a)P(b))", "",
              "| a | b | count | lift |", "| --- | --- | --- | --- |"]
    lines += [f"| {p['a']} | {p['b']} | {p['count']} | {p['lift']:.2f} |" for p in by_lift]
    lines += ["", "## Most frequent pairs (by count)", "", "| a | b | count | joint rate (%) |", "| --- | --- | --- | --- |"]
    lines += [f"| {p['a']} | {p['b']} | {p['count']} | {100 * p['joint_rate']:.1f} |" for p in by_count]
    return "\n".join(lines) + "\n"


def analyze(data_dir: Path, out_dir: Path, *, split: str = "train") -> list[Path]:
    """Analyse the ``split`` partition of the CelebA-format folder ``data_dir``; returns the PNG, Markdown and JSON written to ``out_dir``.

    Raises DatasetError when the label files are missing or malformed or the partition is absent.
    """
    (part,) = require_splits(load_celeba(data_dir, check_images=False), split)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(part.attribute_names)
    stats = attribute_stats(part.labels, names)
    by_lift, by_count = co_occurrence(part.labels, names)
    source = f"{split} partition, {len(part)} images"
    png, md, js = out_dir / "imbalance.png", out_dir / "IMBALANCE.md", out_dir / "imbalance.json"
    plot_rates(stats, png, title=f"CelebA attribute positive rates ({source})")
    md.write_text(render_markdown(stats, by_lift, by_count, source=source))
    js.write_text(json.dumps({"source": source, "attributes": stats, "pairs_by_lift": by_lift,
                              "pairs_by_count": by_count}, indent=1))
    log.info("analysis of %s written to %s", source, out_dir)
    return [png, md, js]
