"""``facialattr serve``: the embedded Triton in the foreground."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_REPOSITORY = os.environ.get("FACIALATTR_MODEL_REPOSITORY", "model_repository")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=Path(DEFAULT_REPOSITORY),
                        help="Triton model repository (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 exposes the server to the network (default: %(default)s)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)


def server_config(args: argparse.Namespace):
    from facialattr.serving.embedded import ServerConfig

    return ServerConfig(
        model_repository=args.model_repository, host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the embedded Triton server on a model repository")
    add_server_arguments(p)
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from facialattr.serving.embedded import EmbeddedTriton

    config = dataclasses.replace(server_config(args), log_verbose=args.log_verbose)
    server = EmbeddedTriton(config)
    try:
        server.start()
        print(f"Triton serving {config.model_repository} — gRPC {config.grpc_url}, HTTP {config.http_url}, "
              f"metrics http://{config.grpc_url.split(':')[0]}:{config.metrics_port}/metrics (Ctrl-C stops)",
              flush=True)
        code = server.wait()
        if code != 0:
            print(server.log_tail(), flush=True)
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
