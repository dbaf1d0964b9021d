"""``facialattr serve``: the embedded Triton in the foreground, restarted whenever it dies."""

from __future__ import annotations

import argparse
import dataclasses

from facialattr import defaults
from facialattr.app import flags
from facialattr.errors import EXIT_OK


def register(subparsers) -> None:
    """Add the ``serve`` subcommand to the ``facialattr`` parser."""
    p = subparsers.add_parser(
        "serve", help="run the embedded Triton server on a model repository, restarted whenever it dies",
        description="Run the embedded Triton under a supervisor: when tritonserver or a Python-backend stub "
                    "dies, or a probe inference fails, it is restarted on the same ports (docs/RELIABILITY.md).")
    flags.add_server_flags(p)
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.add_argument("--supervisor-port", type=int, default=defaults.SUPERVISOR_PORT,
                   help="port of the supervisor's /metrics (restart counter) and /ready endpoints, "
                        "bound on --host; 0 picks a free one (default: %(default)s)")
    p.add_argument("--max-memory-mb", type=int, default=0,
                   help="restart the server when tritonserver and its stubs together hold more resident memory "
                        "than this for several seconds in a row (Triton 2.51 keeps what gzip HTTP bodies expand to); "
                        "a bound the started server nearly reaches idle is refused (docs/RELIABILITY.md); 0: no bound "
                        "(default: %(default)s)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from facialattr.serving.process import raise_open_files_limit
    from facialattr.serving.supervisor import Supervisor, SupervisorSettings

    raise_open_files_limit()  # tritonserver gets the same (serving.embedded); this process serves /ready
    config = dataclasses.replace(flags.server_config(args), log_verbose=args.log_verbose)
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
