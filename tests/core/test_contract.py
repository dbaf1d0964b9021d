"""The contract and Triton's config survive every trip: dataclass -> protobuf -> config.pbtxt -> dataclass."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from facialattr import repository, triton_config
from facialattr.contract import CELEBA_ATTRIBUTES, ModelContract, Preprocessing, logits
from facialattr.errors import ContractError, ModelRepositoryError

ROOT = Path(__file__).resolve().parents[2]


def test_celeba_order_has_forty_unique_names():
    assert len(CELEBA_ATTRIBUTES) == 40 == len(set(CELEBA_ATTRIBUTES))
    assert CELEBA_ATTRIBUTES[4] == "Bald" and CELEBA_ATTRIBUTES[-1] == "Young"


def test_contract_round_trips_through_rendered_and_parsed_config_pbtxt():
    contract = ModelContract(
        preprocessing=Preprocessing(size_hw=(160, 160)),
        thresholds=tuple(0.3 + i / 100 for i in range(40)),
        priors=tuple(0.02 + i / 50 for i in range(40)),
        summary={"val_mean_accuracy": 0.91},
    )
    text = triton_config.render(triton_config.ModelConfig(max_batch_size=32).to_proto(contract))
    parsed = ModelContract.from_model_config(triton_config.parse(text))
    assert parsed.attribute_names == contract.attribute_names
    assert parsed.preprocessing.size_hw == (160, 160)
    assert parsed.thresholds == pytest.approx(contract.thresholds, abs=1e-6)
    assert parsed.priors == pytest.approx(contract.priors, abs=1e-6)
    assert parsed.summary == {"val_mean_accuracy": 0.91}
    assert triton_config.ModelConfig.from_pbtxt(text).max_batch_size == 32


# Every field away from its default, so a field that to_proto writes and from_proto forgets shows up.
CONFIGS = {
    "defaults": triton_config.ModelConfig(),
    "every field set": triton_config.ModelConfig(
        name="facial_attributes_int8", platform="onnxruntime_onnx", max_batch_size=8, input_name="pixels",
        output_name="scores",
        dynamic_batching=triton_config.DynamicBatching(preferred_batch_size=(4, 8), max_queue_delay_microseconds=500,
                                                       max_queue_size=7, default_timeout_microseconds=90),
        instance_group=(triton_config.InstanceGroup(count=3, kind="KIND_CPU"), triton_config.InstanceGroup(kind="KIND_GPU")),
        tensorrt_fp16=True, intra_op_thread_count=4,
    ),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_model_config_round_trips_through_tritons_protobuf_text(config):
    # Canonical: parameters carry 6 decimals, so the crop box is compared as the text holds it.
    contract = ModelContract.from_parameters(ModelContract(preprocessing=Preprocessing(size_hw=(96, 80))).to_parameters())
    text = triton_config.render(config.to_proto(contract))
    # Parsed by Triton's own protobuf, then read back into the dataclass.
    assert triton_config.ModelConfig.from_proto(triton_config.parse(text)) == config
    assert triton_config.ModelConfig.from_pbtxt(text) == config
    served = triton_config.ServedModel.from_proto(triton_config.parse(text))
    assert served.contract == contract and served.config == config


def test_a_config_without_the_thread_parameter_reads_the_core_default():
    proto = triton_config.ModelConfig(intra_op_thread_count=5).to_proto(ModelContract())
    del proto.parameters[triton_config.THREADS_PARAMETER]
    assert triton_config.ModelConfig.from_proto(proto).intra_op_thread_count == triton_config.DEFAULT_INTRA_OP_THREADS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda proto: proto.output.add(name="extra"), "one input and one output"),
        (lambda proto: proto.parameters[triton_config.THREADS_PARAMETER].__setattr__("string_value", "two"),
         "intra_op_thread_count 'two' is not a whole number"),
    ],
    ids=["two outputs", "thread count not a number"],
)
def test_a_config_the_dataclass_cannot_hold_is_refused_with_the_reason(change, message):
    proto = triton_config.ModelConfig().to_proto(ModelContract())
    change(proto)
    with pytest.raises(ContractError, match=message):
        triton_config.ModelConfig.from_proto(proto)


def test_not_a_config_is_refused_naming_its_source():
    with pytest.raises(ModelRepositoryError, match="cfg.pbtxt: not a valid Triton model config"):
        triton_config.ModelConfig.from_pbtxt("max_batch_size: {{ nonsense", source="cfg.pbtxt")


def test_endpoints_that_differ_only_in_instances_and_threads_are_interchangeable():
    contract = ModelContract()
    base = triton_config.ServedModel(config=triton_config.ModelConfig(), contract=contract)
    gpu_replica = triton_config.ModelConfig(instance_group=(triton_config.InstanceGroup(kind="KIND_GPU"),),
                                            intra_op_thread_count=8)
    assert base.interchangeable_with(triton_config.ServedModel(config=gpu_replica, contract=contract))
    for other in (triton_config.ModelConfig(max_batch_size=8), triton_config.ModelConfig(output_name="scores")):
        assert not base.interchangeable_with(triton_config.ServedModel(config=other, contract=contract))


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


SHIPPED_CONFIGS = sorted(ROOT.glob("model_repository/*/config.pbtxt"))


@pytest.mark.parametrize("config_path", SHIPPED_CONFIGS, ids=lambda p: p.parent.name)
def test_every_shipped_config_pbtxt_parses_with_tritons_protobuf_and_has_a_bounded_dynamic_batcher(config_path):
    config = triton_config.load(config_path)
    assert config.name == config_path.parent.name
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0, "the queue must be bounded"


def test_the_shipped_bytes_twin_carries_its_pixel_models_contract_and_renders_back_to_the_same_text():
    from facialattr import encoded

    config_path = ROOT / "model_repository" / encoded.encoded_model_name() / "config.pbtxt"
    assert config_path in SHIPPED_CONFIGS
    entry = repository.load_encoded_model(ROOT / "model_repository")
    pixel = repository.load_model(ROOT / "model_repository", entry.encoded_config.pixel_model)
    assert entry.contract == pixel.contract
    assert triton_config.render(entry.encoded_config.to_proto(entry.contract)) == config_path.read_text()


@pytest.mark.parametrize("config_path", [p for p in SHIPPED_CONFIGS if not repository.is_encoded_folder(p.parent)],
                         ids=lambda p: p.parent.name)
def test_every_shipped_pixel_model_config_carries_the_contract_and_renders_back_to_the_same_text(config_path):
    entry = repository.load_model(config_path.parent.parent, config_path.parent.name)
    assert entry.model_config.input_name == "images" and entry.model_config.output_name == "probabilities"
    assert entry.contract.num_attributes == 40
    # Read back and written again, the shipped config is the same text: nothing is lost on the way.
    assert triton_config.render(entry.model_config.to_proto(entry.contract)) == config_path.read_text()


@pytest.mark.parametrize(("probabilities", "eps", "expected"), [
    ([0.5, 0.88079708, 0.11920292], 1e-7, [0.0, 2.0, -2.0]),  # sigmoid(0), sigmoid(2), sigmoid(-2)
    ([0.0, 1.0], 1e-6, [np.log(1e-6 / (1 - 1e-6)), np.log((1 - 1e-6) / 1e-6)]),  # saturated: clipped, finite
])
def test_logits_invert_the_sigmoid_and_stay_finite_at_0_and_1(probabilities, eps, expected):
    np.testing.assert_allclose(logits(probabilities, eps=eps), expected, rtol=1e-6, atol=1e-7)


def test_shipped_repository_files_name_no_path_of_the_machine_that_exported_them():
    texts = {p: p.read_text() for p in (ROOT / "model_repository").rglob("*") if p.suffix in (".pbtxt", ".json", ".md")}
    assert texts
    assert [p for p, text in texts.items() if re.search(r"(?<![\w.])/(work|root|home|tmp)/", text)] == []
