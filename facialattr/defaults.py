"""Every default that more than one part or command shares, and the environment variables over them: one home each.

The server binds, and clients connect to, this machine unless told otherwise (SECURITY.md).
Ports are Triton's own defaults, which ``facialattr serve`` keeps; the supervisor's port is
the next one. A part that needs one of these imports it from here; a command's flag shows it
as its default. ``grep`` for a port or a timeout finds it here and nowhere else
(tests/core/test_defaults.py holds the code to that for the ports, the URL and the variable names).
"""

from __future__ import annotations

import os
from pathlib import Path

HOST = "127.0.0.1"
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
SUPERVISOR_PORT = 8003
GRPC_URL = f"{HOST}:{GRPC_PORT}"
MODEL_REPOSITORY = "model_repository"

# Environment variables that replace a default (never a setting given on the command line).
ENV_GRPC_URL = "FACIALATTR_GRPC_URL"
ENV_MODEL_REPOSITORY = "FACIALATTR_MODEL_REPOSITORY"

# Client timeouts, in seconds.
# Deadline of one inference request.
REQUEST_TIMEOUT_S = 30.0
# How long a client waits for a server that has not answered at all (a silent host, a port that
# accepts but does not speak Triton gRPC yet), unless told otherwise.
CONNECT_TIMEOUT_S = 10.0
# ... and how long while every endpoint refuses the TCP connection: nothing listens there, which is
# an answer. A server that `facialattr serve` is starting keeps its port closed until its models are
# loaded (seconds); a client started together with it passes an explicit connect timeout instead.
REFUSED_GRACE_S = 1.0
# How long a bulk run keeps retrying a server that answered once and then went away (the run
# stops resumable after it).
GIVE_UP_AFTER_S = 300.0
# Concurrent requests of one client, and its decode threads.
MAX_IN_FLIGHT = 4
DECODE_WORKERS = 2


def grpc_url() -> str:
    """The gRPC endpoint a client uses when given none: ``$FACIALATTR_GRPC_URL``, else :data:`GRPC_URL`."""
    return os.environ.get(ENV_GRPC_URL) or GRPC_URL


def model_repository() -> Path:
    """The model repository a command uses when given none: ``$FACIALATTR_MODEL_REPOSITORY``, else :data:`MODEL_REPOSITORY`."""
    return Path(os.environ.get(ENV_MODEL_REPOSITORY) or MODEL_REPOSITORY)
