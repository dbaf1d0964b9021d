"""``facialattr serve``: the embedded Triton in the foreground."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from facialattr.errors import EXIT_OK

DEFAULT_REPOSITORY = os.environ.get("FACIALATTR_MODEL_REPOSITORY", "model_repository")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the embedded server's options (repository, bind host, ports; 0 picks a free port) to ``parser``."""
    parser.add_argument("--model-repository", type=Path, default=Path(DEFAULT_REPOSITORY),
                        help="Triton model repository (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 exposes the server to the network (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001,
                        help="gRPC port, what clients use; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=8002,
                        help="Prometheus metrics port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--http", action="store_true",
                        help="also serve Triton's HTTP/REST API (off by default: Triton 2.51's HTTP frontend can be "
                             "crashed by one request, see SECURITY.md; clients and health checks use gRPC)")
    parser.add_argument("--http-port", type=int, default=8000,
                        help="HTTP port, used only with --http; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--grpc-infer-allocation-pool-size", type=int, default=0, metavar="N",
                        help="gRPC request/response objects tritonserver keeps for reuse; each keeps the memory of "
                             "the largest request it held, so Triton's default 8 lets any client pin ~1 GB per "
                             "large request (SECURITY.md) (default: %(default)s)")


def server_config(args: argparse.Namespace):
    """The :class:`~facialattr.serving.embedded.ServerConfig` that :func:`add_server_arguments`'s options describe."""
    from facialattr.serving.embedded import ServerConfig

    return ServerConfig(
        model_repository=args.model_repository, host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port, allow_http=args.http,
        grpc_infer_allocation_pool_size=args.grpc_infer_allocation_pool_size,
    )


def register(subparsers) -> None:
    """Add the ``serve`` subcommand to the ``facialattr`` parser."""
    p = subparsers.add_parser(
        "serve", help="run the embedded Triton server on a model repository, restarted whenever it dies",
        description="Run the embedded Triton under a supervisor: when tritonserver or a Python-backend stub "
                    "dies, or a probe inference fails, it is restarted on the same ports (docs/RELIABILITY.md).")
    add_server_arguments(p)
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.add_argument("--supervisor-port", type=int, default=8003,
                   help="port of the supervisor's /metrics (restart counter) and /ready endpoints, "
                        "bound on --host; 0 picks a free one (default: %(default)s)")
    p.add_argument("--max-memory-mb", type=int, default=0,
                   help="restart the server when tritonserver and its stubs together hold more resident memory "
                        "than this for several seconds in a row (Triton 2.51 keeps what gzip HTTP bodies expand to); "
                        "a bound the started server nearly reaches idle is refused (docs/RELIABILITY.md); 0: no bound "
                        "(default: %(default)s)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from facialattr.serving.embedded import raise_open_files_limit
    from facialattr.serving.supervisor import Supervisor, SupervisorSettings

    raise_open_files_limit()  # tritonserver gets the same (serving.embedded); this process serves /ready
    config = dataclasses.replace(server_config(args), log_verbose=args.log_verbose)
    settings = SupervisorSettings(max_rss_bytes=args.max_memory_mb * 2**20 if args.max_memory_mb > 0 else None)
    supervisor = Supervisor(config, settings=settings, endpoint_port=args.supervisor_port)
    try:
        supervisor.run(on_first_ready=_print_banner)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _print_banner(supervisor) -> None:
    config = supervisor.config
    host = config.grpc_url.rsplit(":", 1)[0]
    http = f"HTTP {config.http_url}, " if config.allow_http else ""
    print(f"Triton serving {config.model_repository} — gRPC {config.grpc_url}, {http}"
          f"metrics http://{host}:{config.metrics_port}/metrics, supervisor http://{host}:{supervisor.endpoint_port}"
          "/metrics and /ready (restarted when it dies; Ctrl-C stops)", flush=True)
