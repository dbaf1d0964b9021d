"""Endpoint URLs and the metadata cross-check of the contract (pure units)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from facialattr.client.endpoints import check_metadata, normalise_urls
from facialattr.contract import ModelContract, Preprocessing
from facialattr.errors import ContractError, InputError
from facialattr.triton_config import ModelConfig, ServedModel

SERVED = ServedModel(config=ModelConfig(), contract=ModelContract(preprocessing=Preprocessing(size_hw=(64, 64))))


def _metadata(in_name="images", in_type="UINT8", in_shape=(-1, 64, 64, 3), out_name="probabilities", out_shape=(-1, 40)):
    return SimpleNamespace(
        inputs=[SimpleNamespace(name=in_name, datatype=in_type, shape=list(in_shape))],
        outputs=[SimpleNamespace(name=out_name, datatype="FP32", shape=list(out_shape))],
    )


def test_matching_metadata_passes():
    check_metadata(SERVED, _metadata(), url="u")


@pytest.mark.parametrize("field,value", [
    ("in_name", "input_1"), ("in_type", "FP32"), ("in_shape", (-1, 128, 128, 3)),
    ("out_name", "logits"), ("out_shape", (-1, 39)),
])
def test_metadata_that_disagrees_with_the_contract_is_refused(field, value):
    with pytest.raises(ContractError, match="disagrees with the contract"):
        check_metadata(SERVED, _metadata(**{field: value}), url="u")


@pytest.mark.parametrize("urls,expected", [
    ("127.0.0.1:8001", ["127.0.0.1:8001"]),
    ("a:1,b:2", ["a:1", "b:2"]),
    (["grpc://a:1", "a:1", "b:2"], ["a:1", "b:2"]),
])
def test_urls_are_split_stripped_and_deduplicated(urls, expected):
    assert normalise_urls(urls) == expected


@pytest.mark.parametrize("urls", [[], "a", "a:b", ":1"])
def test_urls_without_host_and_port_are_refused(urls):
    with pytest.raises(InputError):
        normalise_urls(urls)
