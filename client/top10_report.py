"""Top-10 by lift over the prior vs by raw probability, on labelled CelebA images scored by the served model.

    python -m facialattr.client.top10_report --url 127.0.0.1:8001 --celeba /work/shared/data/celeba [--count 1000]

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
from facialattr.client.ranking import Ranker, top_by_probability

from facialattr.contract import ModelContract

RARE_PRIOR = 0.25  # "rare": present on fewer than a quarter of training faces


def read_labels(celeba: Path, *, partition: int, count: int) -> Iterator[tuple[str, np.ndarray]]:
    """(image file name, 40 bools) of the first ``count`` images of a partition (1 = validation)."""
    split = {}
    for line in (celeba / "list_eval_partition.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            split[parts[0]] = int(parts[1])
    lines = (celeba / "list_attr_celeba.txt").read_text().splitlines()[2:]
    n = 0
    for line in lines:
        name, *values = line.split()
        if split.get(name) == partition:
            yield name, np.array([v == "1" for v in values])
            n += 1
            if n >= count:
                return


def compare(probabilities: np.ndarray, truth: np.ndarray, contract: ModelContract, k: int = 10) -> dict[str, np.ndarray]:
    """Per-image measures of both rules; arrays over images."""
    ranker = Ranker(contract)
    names = contract.attribute_names
    index = {n: i for i, n in enumerate(names)}
    rare = np.asarray(contract.priors) < RARE_PRIOR
    common = [index[n] for n in ("No_Beard", "Young") if n in index]
    out: dict[str, list[float]] = {f"{m}_{rule}": [] for m in ("precision", "rare_recall", "common_top3", "mean_prior")
                                   for rule in ("lift", "raw")}
    for p, t in zip(probabilities, truth, strict=True):
        lists = {"lift": [index[n] for n in ranker.top_names(p, k)],
                 "raw": [index[n] for n in top_by_probability(p, contract, k=k)]}
        for rule, top in lists.items():
            out[f"precision_{rule}"].append(t[top].mean())
            wanted = np.flatnonzero(t & rare)
            out[f"rare_recall_{rule}"].append(np.isin(wanted, top).mean() if len(wanted) else np.nan)
            out[f"common_top3_{rule}"].append(len(set(top[:3]) & set(common)))
            out[f"mean_prior_{rule}"].append(np.asarray(contract.priors)[top].mean())
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def markdown(measures: dict[str, np.ndarray], examples: list[tuple[str, list[str], list[str], list[str]]], n: int) -> str:
    rows = [
        ("precision@10 (share of the list truly present)", "precision"),
        (f"truly present rare attributes (prior < {RARE_PRIOR:.0%}) that make the list", "rare_recall"),
        ("No_Beard/Young among the top 3 (mean count)", "common_top3"),
        ("mean training prior of the listed attributes", "mean_prior"),
    ]
    lines = [f"Measured on {n} CelebA validation images.", "", "| measure | lift over prior | raw probability |", "| --- | --- | --- |"]
    for label, key in rows:
        lines.append(f"| {label} | {np.nanmean(measures[key + '_lift']):.3f} | {np.nanmean(measures[key + '_raw']):.3f} |")
    lines += ["", "| image | top-10 by lift | top-10 by raw probability | labelled present |", "| --- | --- | --- | --- |"]
    for name, lift, raw, truth in examples:
        lines.append(f"| {name} | {', '.join(lift)} | {', '.join(raw)} | {', '.join(truth)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from facialattr.client.batching import score_files
    from facialattr.client.scorer import Scorer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", action="append", default=None, help="Triton gRPC HOST:PORT")
    p.add_argument("--celeba", type=Path, default=Path("/work/shared/data/celeba"))
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--examples", type=int, default=5)
    args = p.parse_args(argv)
    labelled = list(read_labels(args.celeba, partition=1, count=args.count))
    with Scorer(args.url or ["127.0.0.1:8001"]) as scorer:
        contract = scorer.contract
        results = list(score_files([args.celeba / "img_align_celeba" / n for n, _ in labelled], scorer))
    keep = [i for i, r in enumerate(results) if r.ok]
    probabilities = np.stack([results[i].probabilities for i in keep])
    truth = np.stack([labelled[i][1] for i in keep])
    measures = compare(probabilities, truth, contract)
    ranker = Ranker(contract)
    examples = [
        (labelled[i][0], ranker.top_names(results[i].probabilities), top_by_probability(results[i].probabilities, contract),
         [n for n, t in zip(contract.attribute_names, labelled[i][1], strict=True) if t])
        for i in keep[: args.examples]
    ]
    print(f"model: {dict(contract.summary)}\n")
    print(markdown(measures, examples, len(keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
