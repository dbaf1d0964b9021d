"""The tritonserver process on this machine: the bundled binary, ports, libpython, and the child's set-up.

What :class:`~facialattr.serving.embedded.EmbeddedTriton` needs from the operating system, apart from
how it builds and runs a server: the binary in the nvidia-pytriton wheel, whether a port can be bound,
fresh ports, what tritonserver's log says went wrong, and what the forked child does before exec.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import resource
import signal
import socket
import sys
import sysconfig
from pathlib import Path

from facialattr import defaults
from facialattr.errors import PortInUseError, ServerError, UnsupportedPlatformError
from facialattr.extras import require_extra

# tritonserver's words for a port another process holds ("Socket 'HOST:PORT' already in use").
PORT_TAKEN_MARK = "already in use"
# A row of tritonserver's start-up model table: | name | version | UNAVAILABLE: cause |
_UNAVAILABLE_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*UNAVAILABLE:(.*?)\|\s*$", re.MULTILINE)


def client_host(host: str) -> str:
    """The address a local client dials for a server bound to ``host`` (a wildcard bind means loopback)."""
    return defaults.HOST if host in ("0.0.0.0", "") else host


def bundled_server() -> tuple[Path, Path]:
    """(tritonserver binary, nvidia_pytriton.libs folder) from the installed wheel."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise UnsupportedPlatformError(
            f"the embedded Triton runs on Linux x86-64 only (this is {sys.platform}/{platform.machine()}); "
            "use docker-compose.yml with the official Triton container instead"
        )
    require_extra("server", what="the embedded Triton server")
    import pytriton

    root = Path(pytriton.__file__).parent
    binary = root / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServerError(f"{binary}: tritonserver binary missing from the nvidia-pytriton wheel")
    return binary, root.parent / "nvidia_pytriton.libs"


def check_port_free(host: str, port: int, *, chosen_with: str) -> None:
    """Raise PortInUseError when ``port`` cannot be bound on ``host`` now.

    The message names host and port and ``chosen_with``, what sets that port (e.g. ``PORT_SETTINGS["grpc_port"]``).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortInUseError(f"port {port} on {host} is already taken ({exc.strerror}); "
                                 f"pick another with {chosen_with}") from exc


def model_load_failures(log_text: str) -> list[str]:
    """One line per model tritonserver's start-up table marks UNAVAILABLE, naming the model and the cause."""
    return [f"model {name} (version {version}) did not load: {cause.strip()}"
            for name, version, cause in _UNAVAILABLE_ROW.findall(log_text)]


def check_libpython() -> None:
    """The Python-backend stub links this interpreter's libpython; without it every model fails to load.

    Triton reports that as a failed chmod of the stub, which points nowhere near the cause.
    """
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not soname.endswith(".so.1.0"):
        return  # a static build names its .a here; the stub's own search is all there is
    if (Path(sysconfig.get_config_var("LIBDIR")) / soname).exists() or ctypes.util.find_library(soname[3:].split(".so")[0]):
        return
    raise ServerError(f"the Triton Python-backend stub needs {soname}, which is neither in "
                      f"{sysconfig.get_config_var('LIBDIR')} nor on the library path: install it "
                      f"(Debian: apt-get install libpython{sys.version_info.major}.{sys.version_info.minor})")


def taken_ports(log_text: str) -> list[int]:
    """Ports tritonserver reported as taken ("Socket 'HOST:PORT' already in use")."""
    return [int(port) for port in re.findall(r":(\d+)'?\s+" + PORT_TAKEN_MARK, log_text)]


def pick_free_ports(host: str, n: int) -> list[int]:
    """``n`` ports free right now (the kernel's choice); the caller retries if one is taken before use."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:  # all held at once: the n ports differ
            s.bind((client_host(host), 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child only calls it


def in_child() -> None:
    """In the child before exec: die with the launcher, create files and shm regions 0600, open many files.

    PR_SET_PDEATHSIG sends SIGTERM when the launching thread dies, even by SIGKILL, so no
    server is orphaned. The kernel ties this to the thread that forked; start servers from
    a thread that outlives them (the main thread in the CLI and tests). The umask keeps what
    the server creates private; the Python backend's /dev/shm regions, which it fchmods to
    0644 regardless, are kept 0600 by the preload library (serving.preload).
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.umask(0o077)
    raise_open_files_limit()


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the new soft limit.

    tritonserver holds a file descriptor per client connection: at a soft limit of 1,024, a local
    user's 1,100 idle connections left no descriptor to accept real clients (issue 27). The hard
    limit is what an unprivileged process may raise itself to; beyond it, only the supervisor's
    probe (fresh connections, serving.supervisor) notices the starvation.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
