"""Training config files, the imbalance losses, the stage-1 analysis and the input pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facialattr.errors import FacialAttrError
from facialattr.training.analyze import analyze, attribute_stats
from facialattr.training.config import TrainConfig, load_config, save_config
from facialattr.training.losses import LossSpec, make_loss, positive_weights


def test_config_round_trips_through_yaml_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    config = TrainConfig(size_hw=(160, 160), loss=LossSpec(kind="focal"), cache_views=3)
    save_config(config, path)
    assert load_config(path) == config
    assert load_config(path, size_hw=(96, 96)).size_hw == (96, 96)
    path.write_text("size_hw: [128, 128]\nlearning_rate_typo: 0.1\n")
    with pytest.raises(FacialAttrError, match="learning_rate_typo"):
        load_config(path)
    json_path = tmp_path / "c.json"
    json_path.write_text(json.dumps({"schedule": "sideways"}))
    with pytest.raises(FacialAttrError, match="schedule"):
        load_config(json_path)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("broken.yaml", "size_hw: [128, 128\n", "broken.yaml does not parse"),
    ("broken.json", "{\"size_hw\": ", "broken.json does not parse"),
    ("list.yaml", "- 128\n", "list.yaml: config must be a mapping"),
])
def test_a_config_file_that_does_not_parse_or_is_not_a_mapping_is_refused_naming_it(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(FacialAttrError, match=message):
        load_config(tmp_path / name)


def test_positive_weights_follow_the_priors_and_are_capped():
    w = positive_weights(np.array([0.5, 0.2, 0.001]), power=1.0, max_weight=20.0)
    assert w.tolist() == pytest.approx([1.0, 4.0, 20.0])
    assert positive_weights(np.array([0.2]), power=0.5, max_weight=20)[0] == pytest.approx(2.0)


@pytest.mark.parametrize("spec", [LossSpec(kind="weighted_bce", pos_weight_power=0.0),
                                  LossSpec(kind="focal", focal_gamma=0.0)])
def test_unweighted_variants_reduce_to_plain_bce(spec):
    y = np.array([[1.0, 0.0, 1.0]], np.float32)
    p = np.array([[0.8, 0.3, 0.1]], np.float32)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(make_loss(spec, np.array([0.1, 0.5, 0.9]))(y, p)[0]) == pytest.approx(bce, rel=1e-5)


def test_weighting_and_focusing_change_the_loss_the_intended_way():
    y = np.array([[1.0, 0.0]], np.float32)
    p = np.array([[0.3, 0.3]], np.float32)
    priors = np.array([0.05, 0.05])
    plain = float(make_loss(LossSpec(kind="bce"), priors)(y, p)[0])
    weighted = float(make_loss(LossSpec(kind="weighted_bce", pos_weight_power=1.0), priors)(y, p)[0])
    focal = float(make_loss(LossSpec(kind="focal"), priors)(y, p)[0])
    assert weighted > plain > focal
    with pytest.raises(FacialAttrError):
        make_loss(LossSpec(kind="hinge"), priors)


def test_attribute_stats_give_rate_and_imbalance_ratio():
    labels = np.array([[1, 0], [0, 0], [0, 0], [0, 1]])
    stats = attribute_stats(labels, ["A", "B"])
    assert stats[0] == {"attribute": "A", "positives": 1, "positive_rate": 0.25, "imbalance_ratio": 3.0}


def test_analyze_writes_chart_table_and_json(tmp_path, celeba_factory):
    data = celeba_factory(tmp_path / "d", n_train=40, n_val=4)
    outputs = analyze(data, tmp_path / "out")
    assert [p.name for p in outputs] == ["imbalance.png", "IMBALANCE.md", "imbalance.json"]
    assert outputs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(outputs[2].read_text())
    assert summary["source"] == "train partition, 40 images" and len(summary["attributes"]) == 40
    assert "| Bald |" in outputs[1].read_text()


def test_pipeline_crops_the_face_box_and_augments_only_when_asked(tmp_path):
    from PIL import Image

    from facialattr.training.config import Augmentation
    from facialattr.training.pipeline import image_dataset

    img = np.zeros((218, 178, 3), np.uint8)
    img[:20] = 255  # above the face box: must be cropped away
    img[20:198] = 100
    Image.fromarray(img).save(tmp_path / "a.png")
    plain = next(iter(image_dataset([tmp_path / "a.png"] * 2, (32, 32), batch_size=2))).numpy()
    assert plain.dtype == np.uint8 and plain.shape == (2, 32, 32, 3)
    assert np.all(plain == 100)
    augmented = next(iter(image_dataset([tmp_path / "a.png"] * 2, (32, 32), batch_size=2,
                                        augmentation=Augmentation(brightness=0.3), aug_seed=3))).numpy()
    assert not np.array_equal(augmented[0], plain[0])
