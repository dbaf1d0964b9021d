"""The bytes model's config and the shared decoder: one home for the name, tensors, limits and the DALI variant."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from facialattr import encoded, repository, triton_config
from facialattr.contract import ModelContract, Preprocessing
from facialattr.decoding import DecodeError, decode_and_prepare
from facialattr.errors import ContractError, ModelRepositoryError

# As config parameters carry it (fractions to 6 digits).
CONTRACT = ModelContract.from_parameters(ModelContract(preprocessing=Preprocessing(size_hw=(64, 64))).to_parameters())


def jpeg(size=(89, 109)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def test_the_bytes_model_is_named_by_one_rule():
    assert encoded.encoded_model_name() == "facial_attributes_bytes"
    assert encoded.encoded_model_name("facial_attributes_int8") == "facial_attributes_int8_bytes"


def test_the_bytes_config_parses_back_to_itself_and_its_contract_through_pbtxt():
    config = encoded.EncodedModelConfig(max_batch_size=32, instance_count=3, inference="onnx")
    text = triton_config.render(config.to_proto(CONTRACT))
    assert encoded.EncodedModelConfig.from_proto(triton_config.parse(text)) == (config, CONTRACT)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.parameters.pop(encoded.PIXEL_MODEL_PARAMETER), "not a bytes model"),
    (lambda c: setattr(c.input[0], "data_type", mc.TYPE_UINT8), "are not a bytes model's"),
    (lambda c: c.output.pop(), "are not a bytes model's"),
    (lambda c: setattr(c, "name", "other"), "its name must be"),
])
def test_a_config_that_is_no_bytes_model_is_refused_naming_why(change, message):
    config = encoded.EncodedModelConfig().to_proto(CONTRACT)
    change(config)
    with pytest.raises(ContractError, match=message):
        encoded.EncodedModelConfig.from_proto(config)


def test_a_twin_whose_contract_drifted_from_its_pixel_model_is_refused(tmp_path):
    from testsupport import make_tiny_repository

    repo = make_tiny_repository(tmp_path)
    other = ModelContract(preprocessing=Preprocessing(size_hw=(64, 64), channel_order="BGR"))
    repository.write_encoded_model(repo, other)
    with pytest.raises(ModelRepositoryError, match="differs from 'facial_attributes'"):
        repository.load_encoded_model(repo)


def test_decode_and_prepare_gives_the_clients_pixels(tmp_path):
    from facialattr.client.preprocess import load_and_prepare

    path = tmp_path / "face.jpg"
    path.write_bytes(jpeg())
    np.testing.assert_array_equal(decode_and_prepare(path.read_bytes(), CONTRACT.preprocessing),
                                  load_and_prepare(path, CONTRACT.preprocessing))


@pytest.mark.parametrize("data, limits, kind", [
    (b"", {}, "empty"),
    (jpeg(), {"max_file_bytes": 100}, "too_large"),
    (jpeg(), {"max_pixels": 89 * 109 - 1}, "too_large"),
    (jpeg(), {"max_decode_bytes": 89 * 109 * 3 - 1}, "too_large"),
    (jpeg()[:400], {}, "corrupt"),
    (b"GIF89a but not really", {}, "unsupported_format"),
])
def test_decode_and_prepare_refuses_with_a_kind_and_raises_nothing_else(data, limits, kind):
    with pytest.raises(DecodeError) as caught:
        decode_and_prepare(data, CONTRACT.preprocessing, path="row 3", **limits)
    assert caught.value.kind == kind and str(caught.value).startswith("row 3: ") and caught.value.reason


def test_the_dali_variant_configs_parse_with_tritons_protobuf_and_chain_into_the_pixel_model(tmp_path):
    folders = repository.write_dali_models(tmp_path, CONTRACT)
    configs = {p.name: triton_config.load(p / "config.pbtxt") for p in folders}
    dali, ensemble = configs[encoded.DALI_MODEL_NAME], configs[encoded.DALI_ENSEMBLE_NAME]
    assert dali.backend == "dali" and dali.input[0].allow_ragged_batch
    assert list(dali.output[0].dims) == [64, 64, 3] and dali.output[0].name == triton_config.INPUT_NAME
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [encoded.DALI_MODEL_NAME, "facial_attributes"]
    assert steps[0].output_map[triton_config.INPUT_NAME] == steps[1].input_map[triton_config.INPUT_NAME]
    assert ModelContract.from_parameters({k: v.string_value for k, v in ensemble.parameters.items()}) == CONTRACT
    ast.parse((tmp_path / encoded.DALI_MODEL_NAME / encoded.DALI_PIPELINE_FILENAME).read_text())


def test_the_repositorys_model_py_only_imports_the_installed_implementation():
    tree = ast.parse(encoded.MODEL_SOURCE)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [
        ("facialattr.serving.encoded_model", ["TritonPythonModel"])]
    assert Path(encoded.__file__).parent.name == "facialattr"
