"""``facialattr analyze | train | compare | evaluate``: thin wrappers over the training part; TensorFlow loads inside the handlers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facialattr.errors import EXIT_OK


def register(subparsers) -> None:
    """Add the ``analyze``, ``train``, ``compare`` and ``evaluate`` subcommands to the ``facialattr`` parser."""
    p = subparsers.add_parser("analyze", help="stage-1 analysis of a CelebA-format data set (imbalance, co-occurrence)")
    p.add_argument("data_dir", type=Path, help="CelebA-format folder (list_attr_celeba.txt, list_eval_partition.txt)")
    p.add_argument("--out", type=Path, default=Path("analysis"), help="output folder (default: %(default)s)")
    p.add_argument("--split", default="train", help="partition to analyse (default: %(default)s)")
    p.set_defaults(func=_analyze)

    p = subparsers.add_parser("train", help="train the attribute model (cached-backbone schedule by default)")
    p.add_argument("data_dir", type=Path, help="CelebA-format folder (img_align_celeba/ and the label lists)")
    p.add_argument("--config", type=Path, help="YAML/JSON TrainConfig (see training/config.py; default: its defaults)")
    p.add_argument("--out", type=Path, required=True, help="run directory; rerunning continues a killed run")
    _add_weights_argument(p)
    p.add_argument("--size", type=int, help="square input size in pixels (default: the config's)")
    p.add_argument("--schedule", choices=("cached", "end_to_end"),
                   help="cached: the frozen lower backbone runs once, the upper blocks and head train on its cache; "
                        "end_to_end: images through the whole network every epoch (default: the config's)")
    p.add_argument("--cache-dir", help="cache of lower-backbone activations (shareable between runs; default: the config's)")
    p.add_argument("--loss", choices=("weighted_bce", "focal", "bce"), help="training loss (default: the config's)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("compare", help="train recipe variants side by side (short protocol) and tabulate them")
    p.add_argument("data_dir", type=Path, help="CelebA-format folder")
    p.add_argument("--configs", type=Path, default=Path("training/configs/compare_e2e"),
                   help="folder with base.yaml and one YAML per variant (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="folder for one run per variant and comparison.md")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants (default: all)")
    _add_weights_argument(p)
    p.set_defaults(func=_compare)

    p = subparsers.add_parser(
        "evaluate", help="per-attribute metrics of a run, model.keras or (with --scores) served model on a data set",
        description="Score MODEL on a CelebA-format partition. With --scores, the served model's probabilities are "
                    "read from a `facialattr score` JSONL file (no TensorFlow needed) and MODEL may also be a model "
                    "folder of a Triton model repository (e.g. model_repository/facial_attributes) or one of its "
                    "version folders; its config.pbtxt supplies the attribute names and thresholds.")
    p.add_argument("model", type=Path,
                   help="run directory or model.keras file; with --scores also a repository model or version folder")
    p.add_argument("data_dir", type=Path, help="CelebA-format folder to score")
    p.add_argument("--split", default="val", help="partition to score (default: %(default)s)")
    p.add_argument("--out", type=Path,
                   help="folder for metrics.json/metrics.md (default: evaluation_SPLIT beside a run's model; for a "
                        "repository folder evaluation_MODEL_vVERSION_SPLIT in the current folder, since the "
                        "repository is the server's)")
    p.add_argument("--scores", type=Path, metavar="JSONL",
                   help="use the served model's probabilities from `facialattr score SPLIT_IMAGES --out X.jsonl` "
                        "instead of running the Keras model (default: run model.keras)")
    p.set_defaults(func=_evaluate)


def _analyze(args: argparse.Namespace) -> int:
    from facialattr.training.analyze import analyze

    outputs = analyze(args.data_dir, args.out, split=args.split)
    print("\n".join(str(p) for p in outputs))
    return EXIT_OK


def _add_weights_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="'imagenet', 'none', or a local no-top .weights.h5 file (default: the config's)")


def _weights_override(args: argparse.Namespace) -> dict:
    if args.weights is None:
        return {}
    return {"weights": None if args.weights.lower() == "none" else args.weights}


def _train(args: argparse.Namespace) -> int:
    from facialattr.training.config import load_config
    from facialattr.training.train import train

    overrides = {"schedule": args.schedule, "cache_dir": args.cache_dir, **_weights_override(args)}
    if args.size is not None:
        overrides["size_hw"] = (args.size, args.size)
    config = load_config(args.config, **overrides)
    if args.loss is not None:
        import dataclasses

        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, kind=args.loss))
    result = train(args.data_dir, args.out, config)
    print(json.dumps(result["summary"], indent=1))
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from facialattr.training.compare import run_comparison

    table = run_comparison(args.data_dir, args.configs, args.out, names=args.only, overrides=_weights_override(args))
    print(table.read_text(), end="")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from facialattr.training.evaluate import evaluate

    result = evaluate(args.model, args.data_dir, split=args.split, out_dir=args.out, scores_file=args.scores)
    print(json.dumps(result["summary"], indent=1))
    return EXIT_OK
