"""Triton gRPC endpoints: one channel each, health bookkeeping, and the contract they serve."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from facialattr.contract import ModelContract
from facialattr.errors import ContractError, InferenceError, InputError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Endpoint:
    """One server; counters are guarded by the Scorer's lock."""

    url: str
    client: Any
    in_flight: int = 0
    sent: int = 0
    failures: int = 0
    down_until: float = 0.0
    verified: bool = False  # its contract was read and matched
    disabled: bool = False  # serves a different contract: never used
    # The largest dynamic_batching.preferred_batch_size the server declares (None: none declared).
    preferred_batch: int | None = None
    _closed: bool = field(default=False, repr=False)

    def mark_down(self, backoff_s: float) -> None:
        self.down_until = time.monotonic() + backoff_s

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()


def normalise_urls(urls: str | Sequence[str]) -> list[str]:
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        for url in str(item).split(","):
            url = url.strip()
            for prefix in ("grpc://", "http://"):
                url = url.removeprefix(prefix)
            if url and url not in out:
                out.append(url)
    if not out:
        raise InputError("no Triton gRPC URL given (expected HOST:PORT)")
    for url in out:
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"{url!r} is not HOST:PORT")
    return out


def open_endpoints(urls: str | Sequence[str], *, max_message_bytes: int) -> list[Endpoint]:
    import tritonclient.grpc as grpcclient

    # Bound both directions: a runaway response (or request) fails instead of eating memory.
    channel_args = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    return [Endpoint(url, grpcclient.InferenceServerClient(url, channel_args=channel_args)) for url in normalise_urls(urls)]


def read_contract(endpoint: Endpoint, model_name: str, model_version: str, timeout_s: float) -> ModelContract:
    """The contract from the server's model config, cross-checked against its model metadata."""
    from tritonclient.utils import InferenceServerException

    try:
        config = endpoint.client.get_model_config(model_name, model_version, client_timeout=timeout_s).config
        metadata = endpoint.client.get_model_metadata(model_name, model_version, client_timeout=timeout_s)
    except InferenceServerException as exc:
        raise InferenceError(f"{endpoint.url}: cannot read model {model_name!r}: {exc}") from None
    try:
        contract = ModelContract.from_model_config(config)
    except ContractError as exc:
        raise ContractError(f"{endpoint.url}: {exc}") from None
    check_metadata(contract, metadata, url=endpoint.url)
    preferred = [int(b) for b in config.dynamic_batching.preferred_batch_size if int(b) > 0]
    endpoint.preferred_batch = max(preferred) if preferred else None
    return contract


def check_metadata(contract: ModelContract, metadata: Any, *, url: str) -> None:
    """The model's metadata (what the server will actually accept) must agree with the contract."""
    h, w = contract.preprocessing.size_hw
    batch_dim = [-1] if contract.max_batch_size > 0 else []
    expected_in = (contract.input_name, "UINT8", batch_dim + [h, w, 3])
    expected_out = (contract.output_name, "FP32", batch_dim + [contract.num_attributes])
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise ContractError(f"{url}: model metadata lists {len(metadata.inputs)} inputs and {len(metadata.outputs)} outputs")
    for kind, tensor, expected in (("input", metadata.inputs[0], expected_in), ("output", metadata.outputs[0], expected_out)):
        got = (tensor.name, tensor.datatype, list(tensor.shape))
        if got != expected:
            raise ContractError(f"{url}: model metadata {kind} {got} disagrees with the contract {expected}")
