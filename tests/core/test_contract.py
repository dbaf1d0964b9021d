"""The contract survives every trip: dataclass -> Triton parameters -> config.pbtxt -> dataclass."""

from __future__ import annotations

from pathlib import Path

import pytest

from facialattr import repository, triton_config
from facialattr.contract import CELEBA_ATTRIBUTES, ModelContract, Preprocessing
from facialattr.errors import ContractError

ROOT = Path(__file__).resolve().parents[2]


def test_celeba_order_has_forty_unique_names():
    assert len(CELEBA_ATTRIBUTES) == 40 == len(set(CELEBA_ATTRIBUTES))
    assert CELEBA_ATTRIBUTES[4] == "Bald" and CELEBA_ATTRIBUTES[-1] == "Young"


def test_contract_round_trips_through_rendered_and_parsed_config_pbtxt():
    contract = ModelContract(
        preprocessing=Preprocessing(size_hw=(160, 160)),
        thresholds=tuple(0.3 + i / 100 for i in range(40)),
        priors=tuple(0.02 + i / 50 for i in range(40)),
        max_batch_size=32,
        summary={"val_mean_accuracy": 0.91},
    )
    text = triton_config.render(triton_config.ModelConfig(max_batch_size=32).to_proto(contract))
    parsed = ModelContract.from_model_config(triton_config.parse(text))
    assert parsed.attribute_names == contract.attribute_names
    assert parsed.preprocessing.size_hw == (160, 160)
    assert parsed.thresholds == pytest.approx(contract.thresholds, abs=1e-6)
    assert parsed.priors == pytest.approx(contract.priors, abs=1e-6)
    assert parsed.max_batch_size == 32 and parsed.summary == {"val_mean_accuracy": 0.91}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"thresholds": (0.5,) * 39}, "thresholds has 39 values"),
        ({"priors": (0.0,) * 40}, "priors must lie strictly between 0 and 1"),
        ({"attribute_names": ("A", "A")}, "unique"),
    ],
)
def test_inconsistent_contract_is_refused(fields, message):
    with pytest.raises(ContractError, match=message):
        ModelContract(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size_hw": (4, 4)}, "size_hw"),
        ({"crop_box_xyxy": (0.5, 0.0, 0.4, 1.0)}, "crop_box_xyxy"),
        ({"channel_order": "RGBA"}, "channel_order"),
    ],
)
def test_invalid_preprocessing_is_refused(fields, message):
    with pytest.raises(ContractError, match=message):
        Preprocessing(**fields)


def test_missing_contract_parameters_are_named():
    with pytest.raises(ContractError, match="thresholds, priors"):
        ModelContract.from_parameters({"attribute_names": "A", "input_size_hw": "8,8", "crop_box_xyxy": "0,0,1,1"})


@pytest.mark.parametrize("config_path", sorted(ROOT.glob("model_repository/*/config.pbtxt")), ids=lambda p: p.parent.name)
def test_every_shipped_config_pbtxt_parses_with_tritons_protobuf_and_carries_the_contract(config_path):
    config = triton_config.load(config_path)
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0, "the queue must be bounded"
    entry = repository.load_model(config_path.parent.parent, config_path.parent.name)
    assert entry.contract.input_name == "images" and entry.contract.output_name == "probabilities"
    assert entry.contract.num_attributes == 40
