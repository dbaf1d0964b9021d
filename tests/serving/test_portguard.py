"""A held port: another local user cannot bind it in any form, the server's own user can listen beside it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
from testsupport import free_ports

from facialattr.errors import PortInUseError
from facialattr.serving.portguard import PortGuard

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="acting as another user needs root and setpriv")

# The attacker's binds: every address a client of 127.0.0.1 or localhost could reach, every option.
_ATTACKER = """
import socket, sys
port, bound = int(sys.argv[1]), []
for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1"),
                        (socket.AF_INET6, "::"), (socket.AF_INET6, "::1"), (socket.AF_INET6, "::ffff:127.0.0.1")):
    for options in ((), ("SO_REUSEADDR",), ("SO_REUSEPORT",), ("SO_REUSEADDR", "SO_REUSEPORT")):
        s = socket.socket(family)
        for option in options:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, option), 1)
        try:
            s.bind((address, port))
            s.listen(1)
            bound.append(f"{address} {'+'.join(options) or 'plain'}")
        except OSError:
            pass
        s.close()
print(";".join(bound))
"""


def binds_as_nobody(port: int) -> list[str]:
    run = subprocess.run([*NOBODY, sys.executable, "-c", _ATTACKER, str(port)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return [b for b in run.stdout.strip().split(";") if b]


@needs_root
def test_another_user_can_bind_a_free_port_but_no_form_of_a_held_one():
    port = free_ports(1)[0]
    assert binds_as_nobody(port), "the attacker's binds work on a free port (else this test proves nothing)"
    with PortGuard("127.0.0.1") as guard:
        guard.hold(port, chosen_with="--grpc-port")
        assert binds_as_nobody(port) == []


def test_the_servers_own_user_listens_beside_the_guard_and_gets_the_connections():
    with PortGuard("127.0.0.1") as guard:
        port = guard.hold(0, chosen_with="--grpc-port")
        with pytest.raises(ConnectionRefusedError):  # the guard itself never accepts: a restart looks down
            socket.create_connection(("127.0.0.1", port), timeout=5)
        for _restart in range(2):
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # what --reuse-grpc-port=true sets
            server.bind(("127.0.0.1", port))
            server.listen(4)
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                accepted, _ = server.accept()
                accepted.close()
            server.close()


def test_a_port_another_process_listens_on_cannot_be_held_and_the_flag_is_named():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with PortGuard("127.0.0.1") as guard, pytest.raises(PortInUseError, match=f"port {port} .*--grpc-port"):
            guard.hold(port, chosen_with="--grpc-port")


def test_a_second_guard_of_the_same_user_cannot_share_a_held_port():
    with PortGuard("127.0.0.1") as first, PortGuard("127.0.0.1") as second:
        port = first.hold(0, chosen_with="--grpc-port")
        with pytest.raises(PortInUseError, match="--grpc-port"):
            second.hold(port, chosen_with="--grpc-port")


def test_closing_the_guard_frees_the_port():
    guard = PortGuard("127.0.0.1")
    port = guard.hold(0, chosen_with="--grpc-port")
    assert guard.ports == [port]
    guard.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
