"""The flags more than one command takes, defined once: the same name, meaning and default text everywhere.

Names follow ``facialattr score``'s (the most used command) and Triton's where Triton has one
(``--model-repository``, ``--grpc-port``, ``--metrics-port``: Triton's own metrics port). Seconds
flags take a number of seconds and store into a ``*_s`` field. docs/CLI.md lists them all.

A renamed flag keeps its old spelling for one release (:class:`Deprecated`): it still works, and
says once on stderr what to write instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facialattr import MODEL_NAME, defaults
from facialattr.errors import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_NO_INPUTS,
    EXIT_OK,
    EXIT_SOME_INPUTS_FAILED,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from facialattr.client.settings import ScorerSettings
    from facialattr.serving.embedded import ServerConfig

# The release that drops the old spellings.
REMOVED_IN = "0.3"


def deprecation_message(old: str, new: str) -> str:
    """What an old spelling prints: the one form, for every renamed flag."""
    return f"facialattr: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}"


class Deprecated(argparse.Action):
    """An old spelling of a flag: stores its value where the new one does, and prints :func:`deprecation_message`."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(deprecation_message(option_string, self.new), file=sys.stderr)
        setattr(namespace, self.dest, values)


def split_urls(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` as a list (the comma form ``watch --url`` took before 0.2)."""
    return [u.strip() for u in text.split(",") if u.strip()]


class _AppendUrls(argparse.Action):
    """``--url`` appends; one value with commas (the old ``watch`` form) still works, with the deprecation line."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        urls = split_urls(values)
        if len(urls) > 1:
            print(deprecation_message("--url A,B", "--url A --url B"), file=sys.stderr)
        setattr(namespace, self.dest, (getattr(namespace, self.dest, None) or []) + urls)


def scoring_exit_statuses() -> str:
    """The exit statuses of a command that scores inputs (``score``, ``predict``), for its ``--help``."""
    return (f"Exit status {EXIT_OK} when every input was scored, {EXIT_SOME_INPUTS_FAILED} when some failed (each "
            f"named), {EXIT_NO_INPUTS} when no image was found, {EXIT_FATAL} on a fatal error (e.g. no server "
            f"answered), {EXIT_USAGE} on a usage error, {EXIT_INTERRUPTED} when interrupted.")


def positive_s(text: str) -> float:
    """A number of seconds greater than zero (``inf`` allowed: wait forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def at_least_one(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_url(parser: argparse.ArgumentParser, *, help_default: str | None = None) -> None:
    """``--url HOST:PORT``, repeatable, into ``args.urls`` (None when not given)."""
    default = help_default or f"{defaults.GRPC_URL}, or ${defaults.ENV_GRPC_URL}"
    parser.add_argument("--url", action=_AppendUrls, dest="urls", metavar="HOST:PORT",
                        help="Triton gRPC endpoint (the server's --grpc-port, not its HTTP port); repeat for several "
                             f"(default: {default})")


def add_scorer_flags(parser: argparse.ArgumentParser, *, give_up_after_s: float = defaults.GIVE_UP_AFTER_S,
                     give_up_help: str = "stop (resumable) when a server that answered stays unreachable this long",
                     server_decode: bool = True) -> None:
    """The flags of :class:`~facialattr.client.settings.ScorerSettings` (read back with :func:`scorer_settings`).

    ``give_up_after_s`` is the command's own default: a bulk run waits minutes for a server to
    come back, ``predict`` at a terminal and ``watch``'s live loop much less. ``server_decode=False``
    leaves out ``--server-decode`` for a command that sends pixels it made itself (``watch``'s face crops).
    """
    add_url(parser)
    parser.add_argument("--model-name", default=MODEL_NAME,
                        help="served model, e.g. facial_attributes_int8 (the INT8 variant, when the repository has it) "
                             "(default: %(default)s)")
    parser.add_argument("--timeout", type=positive_s, default=defaults.REQUEST_TIMEOUT_S, dest="timeout_s",
                        metavar="SECONDS", help="deadline of one inference request (default: %(default)s)")
    parser.add_argument("--connect-timeout", type=positive_s, default=None, dest="connect_timeout_s", metavar="SECONDS",
                        help="give up this soon when no server has answered at all (wrong --url, no server) "
                             f"(default: {defaults.CONNECT_TIMEOUT_S}, or {defaults.REFUSED_GRACE_S} when the connection "
                             "is refused: nothing listens there; pass it to wait for a server that is still starting)")
    parser.add_argument("--give-up-after", type=positive_s, default=give_up_after_s, dest="give_up_after_s",
                        metavar="SECONDS", help=f"{give_up_help} (default: %(default)s)")
    parser.add_argument("--max-in-flight", type=at_least_one, default=defaults.MAX_IN_FLIGHT,
                        help="concurrent requests (default: %(default)s)")
    if not server_decode:
        parser.set_defaults(server_decode=False)
        return
    parser.add_argument("--server-decode", action="store_true",
                        help="send each file's bytes and let the server decode, crop and resize (the model's bytes "
                             "twin, docs/SERVER_DECODE.md): the same rows as decoding here, fewer bytes sent, the "
                             "decoding CPU spent on the server")


def scorer_settings(args: argparse.Namespace) -> ScorerSettings:
    """The :class:`~facialattr.client.settings.ScorerSettings` that :func:`add_scorer_flags`'s flags gave."""
    from facialattr.client.settings import ScorerSettings

    # Without --url, ScorerSettings' own default (the environment, then defaults.GRPC_URL) applies.
    given_urls = {"urls": args.urls} if args.urls else {}
    return ScorerSettings(
        **given_urls, model_name=args.model_name, timeout_s=args.timeout_s, max_in_flight=args.max_in_flight,
        connect_timeout_s=args.connect_timeout_s, give_up_after_s=args.give_up_after_s,
        server_decode=args.server_decode)


def add_model_repository(parser: argparse.ArgumentParser, *, old_spelling: str | None = None,
                         what: str = "Triton model repository") -> None:
    """``--model-repository DIR`` (default ``$FACIALATTR_MODEL_REPOSITORY`` or ``model_repository``)."""
    parser.add_argument("--model-repository", type=Path, default=None, metavar="DIR",
                        help=f"{what} (default: {defaults.MODEL_REPOSITORY}, or ${defaults.ENV_MODEL_REPOSITORY})")
    if old_spelling:
        parser.add_argument(old_spelling, type=Path, dest="model_repository", action=Deprecated,
                            new="--model-repository", help=argparse.SUPPRESS)


def model_repository(args: argparse.Namespace) -> Path:
    """The repository :func:`add_model_repository`'s flag names, or the default (read when the command runs)."""
    return args.model_repository or defaults.model_repository()


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The embedded server's flags (repository, bind host, Triton's ports; 0 picks a free port)."""
    add_model_repository(parser)
    parser.add_argument("--host", default=defaults.HOST,
                        help="address to bind; 0.0.0.0 exposes the server to the network (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=defaults.GRPC_PORT,
                        help="gRPC port, what clients use; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=defaults.METRICS_PORT,
                        help="Triton's Prometheus metrics port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--http", action="store_true",
                        help="also serve Triton's HTTP/REST API (off by default: Triton 2.51's HTTP frontend can be "
                             "crashed by one request, see SECURITY.md; clients and health checks use gRPC)")
    parser.add_argument("--http-port", type=int, default=defaults.HTTP_PORT,
                        help="HTTP port, used only with --http; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--grpc-infer-allocation-pool-size", type=int, default=0, metavar="N",
                        help="gRPC request/response objects tritonserver keeps for reuse; each keeps the memory of "
                             "the largest request it held, so Triton's default 8 lets any client pin ~1 GB per "
                             "large request (SECURITY.md) (default: %(default)s)")


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The :class:`~facialattr.serving.embedded.ServerConfig` that :func:`add_server_flags`'s flags gave."""
    from facialattr.serving.embedded import ServerConfig

    return ServerConfig(
        model_repository=model_repository(args), host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port, allow_http=args.http,
        grpc_infer_allocation_pool_size=args.grpc_infer_allocation_pool_size,
    )
