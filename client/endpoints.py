"""Triton gRPC endpoints: one channel each, health bookkeeping, and the contract they serve."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from facialattr import defaults
from facialattr.client.failures import EndpointError, status_code
from facialattr.errors import ContractError, InputError

if TYPE_CHECKING:  # imported where used: the CLI reads the defaults below without loading tritonclient
    from facialattr.triton_config import ServedModel

log = logging.getLogger(__name__)


TcpState = Literal["accepts", "refused", "silent"]


def tcp_state(url: str, timeout_s: float = 1.0) -> TcpState:
    """What a TCP connection to HOST:PORT meets: a listener, a refusal (nothing listens), or no answer at all.

    "silent" covers timeouts, unreachable hosts and names that do not resolve: nothing that proves
    no server will be there a moment later.
    """
    host, _, port = url.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return "accepts"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "silent"


def tcp_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether anything accepts a TCP connection at HOST:PORT (to tell "nothing there" from "not gRPC")."""
    return tcp_state(url, timeout_s) == "accepts"


def unreachable_message(urls: Sequence[str], *, waited_s: float, last_errors: dict[str, str]) -> str:
    """One plain message for "no endpoint ever answered": what was tried, what answered, what to do."""
    lines = [f"no Triton gRPC endpoint answered within {waited_s:.0f} s:"]
    for url in urls:
        state = tcp_state(url)
        if state == "accepts":
            what = "something accepts connections there, but it does not answer as Triton gRPC"
        elif state == "refused":
            what = "nothing is listening there (connection refused)"
        else:
            what = "nothing answered there (no route to the host, or the connection timed out)"
        lines.append(f"  {url}: {what}; last error: {last_errors.get(url, 'none')}")
        if url.rpartition(":")[2] == str(defaults.HTTP_PORT):
            lines.append(f"  {url} is Triton's HTTP port; this client speaks gRPC, by default on port "
                         f"{defaults.GRPC_PORT}: --url {url.rpartition(':')[0]}:{defaults.GRPC_PORT}")
    lines.append(f"Start a server with `facialattr serve` (gRPC on {defaults.GRPC_URL} by default) or pass --url HOST:PORT; "
                 "--connect-timeout SECONDS waits that long for a server that is still starting.")
    return "\n".join(lines)


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
        """Skip this endpoint for ``backoff_s`` seconds from now (it refused or did not answer)."""
        self.down_until = time.monotonic() + backoff_s

    def close(self) -> None:
        """Close the gRPC channel; closing again does nothing."""
        if not self._closed:
            self._closed = True
            self.client.close()


def normalise_urls(urls: str | Sequence[str]) -> list[str]:
    """``HOST:PORT`` strings from one comma-separated string or a list, without scheme and duplicates, in order.

    Raises InputError when none is given or one is not HOST:PORT.
    """
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


# The largest gRPC message either way, unless a scorer is told otherwise: a runaway answer fails instead.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def open_endpoints(urls: str | Sequence[str], *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[Endpoint]:
    """One :class:`Endpoint` (a gRPC client, not yet checked) per URL of :func:`normalise_urls`.

    Messages either way are capped at ``max_message_bytes``. Raises InputError for bad URLs.
    """
    import tritonclient.grpc as grpcclient

    # Bound both directions: a runaway response (or request) fails instead of eating memory.
    channel_args = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    return [Endpoint(url, grpcclient.InferenceServerClient(url, channel_args=channel_args)) for url in normalise_urls(urls)]


def read_contract(endpoint: Endpoint, model_name: str, model_version: str, timeout_s: float) -> ServedModel:
    """The model's Triton config and contract from the server, cross-checked against its model metadata.

    Raises EndpointError when the server cannot be asked, ContractError (naming the URL) when the
    config lacks the contract or disagrees with the metadata.
    """
    from tritonclient.utils import InferenceServerException

    from facialattr.triton_config import ServedModel

    try:
        config = endpoint.client.get_model_config(model_name, model_version, client_timeout=timeout_s).config
        metadata = endpoint.client.get_model_metadata(model_name, model_version, client_timeout=timeout_s)
    except InferenceServerException as exc:
        raise EndpointError(f"{endpoint.url}: cannot read model {model_name!r}: {exc}", code=status_code(exc)) from None
    try:
        served = ServedModel.from_proto(config)
    except ContractError as exc:
        raise ContractError(f"{endpoint.url}: {exc}") from None
    check_metadata(served, metadata, url=endpoint.url)
    preferred = [b for b in served.config.dynamic_batching.preferred_batch_size if b > 0]
    endpoint.preferred_batch = max(preferred) if preferred else None
    return served


def check_metadata(served: ServedModel, metadata: Any, *, url: str) -> None:
    """The model's metadata (what the server will actually accept) must agree with its config and contract.

    Raises ContractError naming ``url`` when a tensor's name, type or shape differs.
    """
    config, contract = served.config, served.contract
    h, w = contract.preprocessing.size_hw
    batch_dim = [-1] if config.max_batch_size > 0 else []
    expected_in = (config.input_name, "UINT8", batch_dim + [h, w, 3])
    expected_out = (config.output_name, "FP32", batch_dim + [contract.num_attributes])
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise ContractError(f"{url}: model metadata lists {len(metadata.inputs)} inputs and {len(metadata.outputs)} outputs")
    for kind, tensor, expected in (("input", metadata.inputs[0], expected_in), ("output", metadata.outputs[0], expected_out)):
        got = (tensor.name, tensor.datatype, list(tensor.shape))
        if got != expected:
            raise ContractError(f"{url}: model metadata {kind} {got} disagrees with the contract {expected}")
