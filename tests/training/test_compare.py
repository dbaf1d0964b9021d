"""``facialattr compare``: variants of one base recipe, trained side by side and tabulated against the base."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facialattr.app.cli import main
from facialattr.errors import EXIT_FATAL, FacialAttrError
from facialattr.training.compare import describe_changes, merge, variant_configs

TINY = {"size_hw": [40, 40], "alpha": 0.35, "weights": None, "split_layer": "block_2_add", "dropout": 0.0,
        "schedule": "end_to_end", "head_epochs": 0, "finetune_epochs": 1, "finetune_lr": 0.001, "batch_size": 16,
        "max_train_images": 32, "max_val_images": 16, "loss": {"kind": "bce"}}


@pytest.mark.parametrize(("base", "variant", "expected"), [
    ({"size_hw": [128, 128]}, {"size_hw": [160, 160]}, {"size_hw": [160, 160]}),
    ({"loss": {"kind": "bce"}}, {"loss": {"label_smoothing": 0.1}}, {"loss": {"kind": "bce", "label_smoothing": 0.1}}),
    ({"augmentation": {"zoom": 0.1, "flip": True}}, {"augmentation": {"zoom": 0}},
     {"augmentation": {"zoom": 0, "flip": True}}),
    ({"bn_momentum": 0.9}, {"bn_momentum": None}, {"bn_momentum": None}),
])
def test_variant_keys_replace_the_base_and_nested_mappings_merge_key_by_key(base, variant, expected):
    assert merge(base, variant) == expected


def test_changes_name_each_differing_field_once_nested_ones_dotted():
    base = {"size_hw": (128, 128), "loss": {"kind": "bce", "label_smoothing": 0.0}, "ema_momentum": None}
    variant = {"size_hw": (160, 160), "loss": {"kind": "bce", "label_smoothing": 0.1}, "ema_momentum": None}
    assert describe_changes(base, variant) == "size_hw [160, 160], loss.label_smoothing 0.1"


def _configs(folder: Path, variants: dict[str, dict]) -> Path:
    folder.mkdir()
    for name, data in variants.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_a_variant_with_an_unknown_key_is_refused_naming_the_variant(tmp_path):
    folder = _configs(tmp_path / "cmp", {"base": TINY, "typo": {"ema_momentun": 0.9}})
    with pytest.raises(FacialAttrError, match="variant typo"):
        variant_configs(folder)


def test_a_folder_without_a_base_is_refused(tmp_path):
    folder = _configs(tmp_path / "cmp", {"size": {"size_hw": [48, 48]}})
    with pytest.raises(FacialAttrError, match="base.yaml"):
        variant_configs(folder)


def test_compare_trains_each_variant_once_and_tabulates_it_against_the_base(tmp_path, celeba_factory):
    data_dir = celeba_factory(tmp_path / "celeba", n_train=48, n_val=16)
    folder = _configs(tmp_path / "cmp", {"base": TINY, "ema": {"ema_momentum": 0.5}})
    out = tmp_path / "out"
    assert main(["compare", str(data_dir), "--configs", str(folder), "--out", str(out)]) == 0
    finished = {name: (out / name / "metrics.json").stat().st_mtime_ns for name in ("base", "ema")}

    assert main(["compare", str(data_dir), "--configs", str(folder), "--out", str(out), "--only", "ema"]) == 0
    assert {name: (out / name / "metrics.json").stat().st_mtime_ns for name in finished} == finished
    table = (out / "comparison.md").read_text().splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| base", "| ema"]
    assert "ema_momentum 0.5" in table[3] and table[3].count("(+") + table[3].count("(-") == 4


def test_compare_refuses_an_unknown_variant_name_before_training_anything(tmp_path, caplog):
    folder = _configs(tmp_path / "cmp", {"base": TINY})
    code = main(["compare", str(tmp_path), "--configs", str(folder), "--out", str(tmp_path / "o"), "--only", "nope"])
    assert code == EXIT_FATAL
    assert "no variant named nope" in caplog.text
    assert not (tmp_path / "o").exists()
