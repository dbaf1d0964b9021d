"""The top-10 report's measures on hand-made probabilities and labels (pure unit)."""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.client.top10_report import compare, markdown, read_labels
from facialattr.contract import CELEBA_ATTRIBUTES, ModelContract

PRIORS = {"No_Beard": 0.83, "Young": 0.75, "Eyeglasses": 0.065, "Bald": 0.02}


def _contract():
    priors = tuple(PRIORS.get(n, 0.3) for n in CELEBA_ATTRIBUTES)
    return ModelContract(priors=priors)


def test_lift_surfaces_the_present_rare_attribute_that_raw_ranking_drops():
    index = {n: i for i, n in enumerate(CELEBA_ATTRIBUTES)}
    p = np.full(40, 0.4)
    p[[index["No_Beard"], index["Young"]]] = 0.9
    p[index["Eyeglasses"]] = 0.55
    for i, name in enumerate(CELEBA_ATTRIBUTES):  # ten other attributes a little above 0.55 but common
        if name not in PRIORS and i % 4 == 0:
            p[i] = 0.6
    truth = np.zeros(40, bool)
    truth[[index["No_Beard"], index["Young"], index["Eyeglasses"]]] = True
    measures = compare(p[None], truth[None], _contract(), k=3)
    lift, raw = measures["lift, present first (shipped)"], measures["raw probability"]
    assert lift["rare_recall"] == 1.0 and raw["rare_recall"] == 0.0
    assert raw["common_top3"] == 2 and lift["common_top3"] == 0
    assert "| raw probability | " in markdown(measures, [], 1)


def test_the_shipped_rule_in_the_report_is_the_ranker():
    from facialattr.client.ranking import Ranker
    from facialattr.client.top10_report import rule_orders

    contract = _contract()
    probabilities = np.random.default_rng(3).random((20, 40))
    orders = rule_orders(probabilities, contract)["lift, present first (shipped)"]
    ranker = Ranker(contract)
    assert [[CELEBA_ATTRIBUTES[i] for i in row] for row in orders] == [ranker.top_names(p) for p in probabilities]


@pytest.mark.parametrize("partition,expected", [(1, ["b.jpg"]), (0, ["a.jpg", "c.jpg"])])
def test_labels_are_read_per_partition(tmp_path, partition, expected):
    (tmp_path / "list_eval_partition.txt").write_text("a.jpg 0\nb.jpg 1\nc.jpg 0\n")
    header = " ".join(CELEBA_ATTRIBUTES)
    rows = "\n".join(f"{n} " + " ".join(["1"] + ["-1"] * 39) for n in ("a.jpg", "b.jpg", "c.jpg"))
    (tmp_path / "list_attr_celeba.txt").write_text(f"3\n{header}\n{rows}\n")
    got = list(read_labels(tmp_path, partition=partition, count=10))
    assert [n for n, _ in got] == expected and got[0][1][0] and not got[0][1][1:].any()


def test_a_malformed_label_row_is_a_dataset_error_naming_file_and_line(tmp_path):
    from facialattr.errors import DatasetError

    (tmp_path / "list_eval_partition.txt").write_text("a.jpg 1\n")
    (tmp_path / "list_attr_celeba.txt").write_text(f"1\n{' '.join(CELEBA_ATTRIBUTES)}\na.jpg 1 -1\n")
    with pytest.raises(DatasetError, match="list_attr_celeba.txt:3"):
        list(read_labels(tmp_path, partition=1, count=10))
