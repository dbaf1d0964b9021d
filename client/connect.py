"""Opening a scorer's endpoints: wait for the model contract every answering endpoint serves, and check its twin.

The waits are the scorer's (see :class:`~facialattr.client.scorer.Scorer`): ``connect_timeout_s`` while no
endpoint has answered as a gRPC server, cut to ``defaults.REFUSED_GRACE_S`` when every endpoint refuses the
TCP connection, and ``answered_wait_s`` once one answered (a server still loading its model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from facialattr import defaults, encoded
from facialattr.client.endpoints import Endpoint, open_endpoints, read_contract, tcp_state, unreachable_message
from facialattr.client.failures import (
    EndpointError,
    RateLimitedLog,
    RetryPolicy,
    first_line,
    is_not_found,
    server_answered,
)
from facialattr.client.settings import ScorerSettings
from facialattr.errors import ContractError, ServerUnavailableError
from facialattr.triton_config import ServedModel


def probe(settings: ScorerSettings) -> ServedModel:
    """What a scorer opened from ``settings`` would find, without opening one: after the same waits, the
    contract its servers serve (and, with ``server_decode``, that their bytes twin serves it too).

    Raises what :meth:`Scorer.from_settings <facialattr.client.scorer.Scorer.from_settings>` would. For a
    driver that checks the servers once before handing ``settings`` to workers that each open a scorer.
    """
    endpoints = open_endpoints(settings.urls)
    try:
        served = wait_for_contract(
            endpoints, settings.model_name, "", call_timeout_s=settings.timeout_s,
            retry=RetryPolicy(give_up_after_s=settings.give_up_after_s), connect_timeout_s=settings.connect_timeout_s,
            answered_wait_s=settings.give_up_after_s, warnings=RateLimitedLog())
        if settings.server_decode:
            check_encoded_twin(endpoints, served, settings.model_name, "", timeout_s=settings.timeout_s)
        return served
    finally:
        for endpoint in endpoints:
            endpoint.close()


def wait_for_contract(endpoints: Sequence[Endpoint], model_name: str, model_version: str, *, call_timeout_s: float,
                      retry: RetryPolicy, connect_timeout_s: float | None, answered_wait_s: float | None,
                      warnings: RateLimitedLog) -> ServedModel:
    """The contract from every endpoint that answers; they must agree. Marks those endpoints verified.

    Raises :class:`ServerUnavailableError` (a plain explanation) when the wait ends, :class:`ContractError`
    when two endpoints serve different contracts.
    """
    started = time.monotonic()
    urls = [e.url for e in endpoints]
    # None: the default wait, cut short when every endpoint refuses connections.
    refused_wait_s = defaults.REFUSED_GRACE_S if connect_timeout_s is None else math.inf
    connect_timeout_s = defaults.CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
    answered_wait_s = math.inf if answered_wait_s is None else answered_wait_s
    answered = False  # some endpoint answered as a gRPC server (e.g. "model not loaded yet")
    not_served: list[str] = []  # endpoints that answered NOT_FOUND for the model name
    last_errors: dict[str, str] = {}
    attempt = 0
    # Bounded by the connect timeout: a silent endpoint must not hold the first answer back.
    call_timeout_s = min(call_timeout_s, max(1.0, connect_timeout_s))
    while True:
        contracts = {}
        for endpoint in endpoints:
            try:
                contracts[endpoint.url] = read_contract(endpoint, model_name, model_version, call_timeout_s)
                endpoint.verified = True
            except EndpointError as exc:
                answered = answered or server_answered(exc.code)
                if is_not_found(exc.code) and endpoint.url not in not_served:
                    not_served.append(endpoint.url)
                last_errors[endpoint.url] = str(exc).removeprefix(f"{endpoint.url}: ")
                warnings.warning(endpoint.url, "%s", exc)
                endpoint.mark_down(retry.backoff_s(0))
        if contracts:
            return _agreed(contracts)
        elapsed_s = time.monotonic() - started
        if answered:
            wait_s = answered_wait_s
        else:
            wait_s = connect_timeout_s
            if refused_wait_s < connect_timeout_s and elapsed_s >= refused_wait_s:
                if all(tcp_state(url) == "refused" for url in urls):
                    wait_s = refused_wait_s
                else:
                    refused_wait_s = math.inf  # something listens (or may): the full wait
        if elapsed_s >= wait_s:
            raise _gave_up(urls, model_name, answered=answered, not_served=not_served, waited_s=elapsed_s,
                           wait_s=wait_s, last_errors=last_errors)
        # Wake at the end of the refusal grace too, so a refused run ends on time.
        next_check_s = min(wait_s, refused_wait_s if refused_wait_s > elapsed_s else math.inf)
        time.sleep(min(retry.backoff_s(attempt), max(0.0, next_check_s - elapsed_s)))
        attempt += 1


def _agreed(contracts: dict[str, ServedModel]) -> ServedModel:
    first_url, contract = next(iter(contracts.items()))
    for url, other in contracts.items():
        if not other.interchangeable_with(contract):
            raise ContractError(f"endpoints {first_url} and {url} serve different model contracts")
    return contract


def _gave_up(urls: list[str], model_name: str, *, answered: bool, not_served: list[str], waited_s: float,
             wait_s: float, last_errors: dict[str, str]) -> ServerUnavailableError:
    if answered:
        return ServerUnavailableError(
            f"no Triton endpoint at {', '.join(urls)} served model {model_name!r} within "
            f"{wait_s:.0f} s; last errors: {last_errors}")
    if not_served:
        return ServerUnavailableError(
            f"{', '.join(not_served)} answered but serves no model {model_name!r} (NOT_FOUND): "
            f"check the model name (--model-name; `facialattr serve` serves each folder of its model "
            f"repository); if the server is still loading that model, raise --connect-timeout")
    return ServerUnavailableError(unreachable_message(urls, waited_s=waited_s, last_errors=last_errors))


def check_encoded_twin(endpoints: Sequence[Endpoint], served: ServedModel, model_name: str, model_version: str, *,
                       timeout_s: float) -> encoded.EncodedModelConfig:
    """The bytes twin's config from every verified endpoint; ContractError unless it serves ``served``'s contract."""
    from tritonclient.utils import InferenceServerException

    twin_name = encoded.encoded_model_name(model_name)
    found = None
    for endpoint in (e for e in endpoints if e.verified):
        try:
            config = endpoint.client.get_model_config(twin_name, model_version, client_timeout=timeout_s).config
        except InferenceServerException as exc:
            raise ContractError(
                f"{endpoint.url} serves no model {twin_name!r} for --server-decode ({first_line(exc)}); "
                f"its model repository predates server-side decoding: re-export, or decode here (drop --server-decode)"
            ) from None
        try:
            found, contract = encoded.EncodedModelConfig.from_proto(config)
        except ContractError as exc:
            raise ContractError(f"{endpoint.url}: {exc}") from None
        if contract != served.contract or found.pixel_model != model_name:
            raise ContractError(f"{endpoint.url}: {twin_name!r} serves another contract than "
                                f"{model_name!r}; re-export to write both")
    return found
