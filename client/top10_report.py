"""Top-10 by lift over the prior vs by raw probability, on labelled CelebA images scored by the served model.

    python -m facialattr.client.top10_report --url HOST:PORT --celeba CELEBA_DIR [--count 1000]

Prints a Markdown report (for docs/TOP10.md): for validation images, how often
the two rules put the ubiquitous attributes on top, how many truly present rare
attributes each surfaces, the precision of each list against CelebA's labels,
and a few examples by image id (no pictures: CelebA images are not ours to copy).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facialattr.celeba import ATTR_FILE, IMAGE_DIR, PARTITION_FILE, PARTITIONS, read_attributes, read_mapping
from facialattr.client.ranking import Ranker, lift_scores, top_by_probability
from facialattr.contract import ModelContract

RARE_PRIOR = 0.25  # "rare": present on fewer than a quarter of training faces


def read_labels(celeba: Path, *, partition: int, count: int) -> Iterator[tuple[str, np.ndarray]]:
    """(image file name, 40 bools) of the first ``count`` images of a partition (codes as ``PARTITIONS``: 1 = val).

    Read with the core's CelebA parsers: raises :class:`DatasetError` naming the file and line
    when ``list_attr_celeba.txt`` or ``list_eval_partition.txt`` is missing or malformed.
    """
    partitions = read_mapping(celeba / PARTITION_FILE, valid=set(PARTITIONS.values()))
    _, files, labels = read_attributes(celeba / ATTR_FILE)
    chosen = [i for i, name in enumerate(files) if partitions.get(name) == partition][:count]
    for i in chosen:
        yield files[i], labels[i].astype(bool)


def rule_orders(probabilities: np.ndarray, contract: ModelContract, k: int = 10) -> dict[str, np.ndarray]:
    """[N, k] attribute indices per rule; the shipped rule first, raw probability second."""
    p = np.asarray(probabilities, dtype=np.float64)
    lift = lift_scores(p, contract.priors)
    present = p >= np.asarray(contract.thresholds)
    keys = {
        "lift, present first (shipped)": np.where(present, -1e9, 0.0) - lift,
        "raw probability": -p,
        "lift only": -lift,
        "probability, present first": np.where(present, -1e9, 0.0) - p,
        "lift, present at p >= 0.5 first": np.where(p >= 0.5, -1e9, 0.0) - lift,
    }
    # Stable sort: ties keep the contract's attribute order, as Ranker does.
    return {name: np.argsort(key, axis=1, kind="stable")[:, :k] for name, key in keys.items()}


def compare(probabilities: np.ndarray, truth: np.ndarray, contract: ModelContract, k: int = 10) -> dict[str, dict[str, float]]:
    """rule -> {precision, rare_recall, common_top3, mean_prior}, averaged over images."""
    priors = np.asarray(contract.priors)
    rare = priors < RARE_PRIOR
    names = list(contract.attribute_names)
    common = [names.index(n) for n in ("No_Beard", "Young") if n in names]
    out = {}
    for rule, order in rule_orders(probabilities, contract, k).items():
        wanted = truth & rare
        found = np.zeros_like(truth)
        np.put_along_axis(found, order, True, axis=1)
        has_rare = wanted.sum(1) > 0
        out[rule] = {
            "precision": float(np.take_along_axis(truth, order, 1).mean()),
            "rare_recall": float(((found & wanted).sum(1)[has_rare] / wanted.sum(1)[has_rare]).mean()) if has_rare.any() else float("nan"),
            "common_top3": float(np.isin(order[:, :3], common).sum(1).mean()),
            "mean_prior": float(priors[order].mean()),
        }
    return out


def markdown(measures: dict[str, dict[str, float]], examples: list[tuple[str, list[str], list[str], list[str]]], n: int,
             flags: tuple[float, float, float] | None = None) -> str:
    """The report as Markdown: one row per ranking rule, optional present-flag line, then example faces."""
    lines = [f"Measured on {n} CelebA validation images.", "",
             f"| rule | precision@10 | truly present rare (prior < {RARE_PRIOR:.0%}) attributes listed "
             "| No_Beard/Young in top 3 | mean prior of listed |", "| --- | --- | --- | --- | --- |"]
    for rule, m in measures.items():
        lines.append(f"| {rule} | {m['precision']:.3f} | {m['rare_recall']:.3f} | {m['common_top3']:.2f} | {m['mean_prior']:.3f} |")
    if flags:
        lines += ["", f"Present flags: {flags[0]:.1f} per face (labelled present: {flags[1]:.1f}), precision {flags[2]:.2f}."]
    lines += ["", "| image | top-10 by lift | top-10 by raw probability | labelled present |", "| --- | --- | --- | --- |"]
    for name, lift, raw, truth in examples:
        lines.append(f"| {name} | {', '.join(lift)} | {', '.join(raw)} | {', '.join(truth)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m facialattr.client.top10_report``: score ``--count`` labelled val images and print the report; returns the exit status."""
    from facialattr.client.batching import score_files
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", action="append", default=None, help="Triton gRPC HOST:PORT")
    p.add_argument("--celeba", type=Path, required=True, metavar="DIR",
                   help="CelebA in its native layout (list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/)")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--examples", type=int, default=5)
    args = p.parse_args(argv)
    labelled = list(read_labels(args.celeba, partition=PARTITIONS["val"], count=args.count))
    with Scorer.from_settings(ScorerSettings(urls=args.url) if args.url else ScorerSettings()) as scorer:
        contract = scorer.contract
        results = list(score_files([args.celeba / IMAGE_DIR / n for n, _ in labelled], scorer))
    keep = [i for i, r in enumerate(results) if r.ok]
    probabilities = np.stack([results[i].probabilities for i in keep])
    truth = np.stack([labelled[i][1] for i in keep])
    measures = compare(probabilities, truth, contract)
    present = probabilities >= np.asarray(contract.thresholds)
    flags = (present.sum(1).mean(), truth.sum(1).mean(), (present & truth).sum() / max(present.sum(), 1))
    ranker = Ranker(contract)
    examples = [
        (labelled[i][0], ranker.top_names(results[i].probabilities), top_by_probability(results[i].probabilities, contract),
         [n for n, t in zip(contract.attribute_names, labelled[i][1], strict=True) if t])
        for i in keep[: args.examples]
    ]
    print(f"model: {dict(contract.summary)}\n")
    print(markdown(measures, examples, len(keep), flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
