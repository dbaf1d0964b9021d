"""connect.probe: what a scorer opened from the same settings would find, checked without opening one."""

from __future__ import annotations

import time

import pytest
from testsupport import free_ports

from facialattr.client.connect import probe
from facialattr.client.scorer import Scorer
from facialattr.client.settings import ScorerSettings
from facialattr.errors import ContractError, ServerUnavailableError


def test_a_live_server_gives_the_contract_a_scorer_reads(grpc_url):
    settings = ScorerSettings(urls=(grpc_url,))
    with Scorer.from_settings(settings) as scorer:
        assert probe(settings) == scorer.served


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"model_name": "no_such_model"}, ServerUnavailableError, "serves no model 'no_such_model'"),
    ({"server_decode": True}, ContractError, "drop --server-decode"),  # the tiny repository has no bytes twin
])
def test_a_server_without_what_the_settings_ask_for_fails_as_the_scorer_would(grpc_url, change, error, message):
    settings = ScorerSettings(urls=(grpc_url,), connect_timeout_s=2.0, **change)
    with pytest.raises(error, match=message):
        probe(settings)
    with pytest.raises(error, match=message):
        Scorer.from_settings(settings)


def test_nothing_listening_fails_within_the_refusal_grace_naming_the_url():
    (port,) = free_ports(1)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}: nothing is listening there"):
        probe(ScorerSettings(urls=(f"127.0.0.1:{port}",)))
    assert time.monotonic() - started < 5
