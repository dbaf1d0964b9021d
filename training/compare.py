"""Side-by-side recipe comparisons: one base config, variants that each change one thing.

A comparison folder holds ``base.yaml`` and one YAML per variant; a variant's keys
replace the base's (nested ``augmentation``/``loss`` mappings merge key by key). Each
variant trains into ``OUT/<name>`` with :func:`facialattr.training.train.train`, so a
killed comparison resumes where it stopped, and finished variants are not retrained.
The table puts each variant's val metrics and cost next to the base's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from facialattr.errors import FacialAttrError
from facialattr.training.config import TrainConfig, config_from_dict, read_config_data

log = logging.getLogger(__name__)

BASE = "base"
NESTED = ("augmentation", "loss")


def merge(base: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``variant``'s keys replacing it; the nested mappings merge key by key."""
    merged = dict(base)
    for key, value in variant.items():
        if key in NESTED and isinstance(value, dict):
            merged[key] = {**base.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def variant_configs(config_dir: Path, *, overrides: dict[str, Any] | None = None) -> dict[str, TrainConfig]:
    """Every variant's full config, base first, by file stem; raises FacialAttrError naming a bad one.

    ``overrides`` (the command line's, e.g. ``weights``) replace those fields in every variant.
    """
    base_file = config_dir / f"{BASE}.yaml"
    if not base_file.is_file():
        raise FacialAttrError(f"{config_dir} has no {BASE}.yaml")
    base = {**read_config_data(base_file), **(overrides or {})}
    data = {BASE: base}
    for path in sorted(config_dir.glob("*.yaml")):
        if path.stem != BASE:
            data[path.stem] = {**merge(base, read_config_data(path)), **(overrides or {})}
    configs = {}
    for name, values in data.items():
        try:
            configs[name] = config_from_dict(values)
        except FacialAttrError as exc:
            raise FacialAttrError(f"variant {name}: {exc}") from exc
    return configs


def run_comparison(data_dir: Path, config_dir: Path, out_dir: Path, *, names: list[str] | None = None,
                   overrides: dict[str, Any] | None = None) -> Path:
    """Train every variant (or those in ``names``, in that order) not yet finished into ``out_dir/<name>``; returns the table's path."""
    from facialattr.training.train import train

    configs = variant_configs(config_dir, overrides=overrides)
    unknown = sorted(set(names or ()) - set(configs))
    if unknown:
        raise FacialAttrError(f"no variant named {', '.join(unknown)} in {config_dir}")
    for name in names or list(configs):
        if (out_dir / name / "metrics.json").is_file():
            log.info("variant %s already finished", name)
            continue
        log.info("variant %s: training", name)
        train(data_dir, out_dir / name, configs[name])
    return write_table(configs, out_dir)


def variant_row(run_dir: Path) -> dict[str, float] | None:
    """A finished variant's val means (percent) and training cost, or None when it has not finished."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    means = metrics["means"]
    history = _history(run_dir)
    return {
        "accuracy": 100 * means["at_0.5"]["accuracy"],
        "auc": 100 * means["at_0.5"]["roc_auc"],
        "balanced_in_sample": 100 * means["at_thresholds_in_sample"]["balanced_accuracy"],
        "balanced_cross": 100 * means["cross_calibrated_2fold"]["balanced_accuracy"],
        "images_per_s": history.get("images_per_s", float("nan")),
        "load": history.get("load_avg_1m", float("nan")),
    }


def _history(run_dir: Path) -> dict[str, float]:
    from facialattr.training.report import read_history

    rows = read_history(run_dir)
    values: dict[str, float] = {}
    for key, value in (rows[-1] if rows else {}).items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            continue  # the phase tag
    return values


def write_table(configs: dict[str, TrainConfig], out_dir: Path) -> Path:
    """Write ``out_dir/comparison.md``: one row per finished variant of ``configs`` (:func:`variant_configs`),
    with differences from the base."""
    configs = {name: config.to_dict() for name, config in configs.items()}
    rows = {name: variant_row(out_dir / name) for name in configs}
    base = rows.get(BASE)
    lines = ["| variant | changes | acc@0.5 | bal.acc in-sample | bal.acc cross-cal | AUC | train images/s (load) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        if row is None:
            continue
        change = "" if name == BASE else describe_changes(configs[BASE], configs[name])
        cells = [_cell(row, base, key, name) for key in ("accuracy", "balanced_in_sample", "balanced_cross", "auc")]
        lines.append(f"| {name} | {change} | {' | '.join(cells)} | {row['images_per_s']:.1f} ({row['load']:.2f}) |")
    path = out_dir / "comparison.md"
    path.write_text("\n".join(lines) + "\n")
    log.info("wrote %s", path)
    return path


def describe_changes(base: dict[str, Any], variant: dict[str, Any]) -> str:
    """The fields where two full configs (``TrainConfig.to_dict()``) differ, nested ones dotted: ``loss.kind weighted_bce``."""
    parts = []
    for key, value in variant.items():
        if isinstance(value, dict):
            parts += [f"{key}.{k} {json.dumps(v)}" for k, v in value.items() if base[key].get(k) != v]
        elif base.get(key) != value:
            parts.append(f"{key} {json.dumps(value)}")
    return ", ".join(parts).replace("|", "/")


def _cell(row: dict[str, float], base: dict[str, float] | None, key: str, name: str) -> str:
    if base is None or name == BASE:
        return f"{row[key]:.2f}"
    return f"{row[key]:.2f} ({row[key] - base[key]:+.2f})"
