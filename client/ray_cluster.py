"""Ray clusters for ``facialattr score --engine ray``: joining one (fast failure, token auth) or starting one.

Ray is imported only inside these functions (the ``ray`` extra).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from facialattr import defaults
from facialattr.errors import FacialAttrError, InputError
from facialattr.extras import require_extra

log = logging.getLogger(__name__)

RAY_CONNECT_TIMEOUT_S = 5.0


class RayClusterError(FacialAttrError):
    """No Ray cluster could be reached or started at the given address."""


def require_ray() -> None:
    """Raise MissingExtraError (the 'ray' extra and its install command) when Ray is not installed.

    ``facialattr score`` calls it where ``--engine ray`` is chosen, before any output or connection.
    """
    require_extra("ray", what="facialattr score --engine ray")


@contextmanager
def ray_session(address: str | None):
    """Connect to the cluster at ``address`` (or start a local one); yields the seconds that took.

    Raises RayClusterError within about RAY_CONNECT_TIMEOUT_S when nothing listens at ``address``.
    """
    started = time.perf_counter()
    if address:
        _check_reachable(address)
        _use_token_auth_if_available()  # before Ray is imported: it reads RAY_AUTH_MODE once
    require_ray()
    import ray

    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayClusterError(f"cannot join the Ray cluster at {address}: {exc} (a cluster with token "
                                  "authentication needs its token: RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)") from None
    else:
        # A private instance for this run: no dashboard and no usage reports (the processes and the start-up
        # time they cost serve a long-lived cluster, not one run). Ray binds the node address whatever it is
        # told, and turns token authentication on: docs/DISTRIBUTED.md, Security.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False, num_cpus=os.cpu_count(), **kwargs)
    try:
        yield time.perf_counter() - started
    finally:
        ray.shutdown()


def _use_token_auth_if_available() -> None:
    """Send the cluster token when one is at hand and RAY_AUTH_MODE is unset.

    Ray 2.60 turns token authentication on for clusters it starts and writes the token to
    ~/.ray/auth_token, but a driver given an explicit address only sends it with RAY_AUTH_MODE=token.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return  # the user's choice
    token_path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_path.exists():
        log.info("using Ray token authentication (token from %s)",
                 "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else token_path)
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, instead of Ray's long connect retries."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto":
        return
    if not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r} is not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayClusterError(f"no Ray cluster at {address}: {exc.strerror or exc}. Start one with "
                              "`ray start --head`, or leave out --ray-address to start a local one") from None


def start_ray_head(temp_dir: os.PathLike | str, *, num_cpus: int, object_store_bytes: int = 300 * 1024 * 1024,
                   timeout_s: float = 180.0):
    """``ray start --head --block`` as a process group of its own: (process, "HOST:PORT" on this machine).

    For tests and benchmarks: no dashboard, no usage stats, a port Ray picks itself (read back
    from its output). Stop it with :func:`stop_ray_head`. Raises RayClusterError when it does not come up.
    """
    import re
    import subprocess

    temp_dir = Path(temp_dir)
    log_path = temp_dir / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", "0",
             "--num-cpus", str(num_cpus), "--node-ip-address", defaults.HOST, "--include-dashboard", "false",
             "--disable-usage-stats", "--temp-dir", str(temp_dir), "--object-store-memory", str(object_store_bytes)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not (match := re.search(r"--address='[^:']+:(\d+)'", log_path.read_text())):
        if head.poll() is not None or time.monotonic() > deadline:
            stop_ray_head(head)
            raise RayClusterError(f"ray start --head did not come up:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    return head, f"{defaults.HOST}:{match[1]}"


def stop_ray_head(head, *, grace_s: float = 10.0) -> None:
    """Stop a head from :func:`start_ray_head` and everything it started (its process group)."""
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            break
        try:
            head.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    head.wait()
