"""Keep the server's ports for its user while tritonserver restarts, so no other local user can take them.

A restart closes tritonserver's listening socket; until the next one binds, the port is free, and
another local user who binds it in that window answers the clients as an impostor (issue 27: a
process of ``nobody`` retrying ``bind`` took the port and served forged scores). A
:class:`PortGuard` holds one extra socket per port, bound with ``SO_REUSEPORT`` and never
listening, from the first start until ``facialattr serve`` ends. Linux lets a socket share a port
held with ``SO_REUSEPORT`` only when it also sets ``SO_REUSEPORT`` and belongs to the same user,
so tritonserver (started with ``--reuse-grpc-port=true``) binds beside the guard at every
restart, while any other user's ``bind`` fails with ``EADDRINUSE``, whatever options it sets or
address (wildcard, IPv4-mapped) it uses. A socket that never listens takes no connections:
while tritonserver is down a client is refused, as before. The guard sets no ``SO_REUSEADDR``,
since two such sockets may share a port as long as neither listens.

Not covered: when ``facialattr serve`` itself ends (or is killed) the guard goes with it.
"""

from __future__ import annotations

import logging
import socket

from facialattr.errors import PortInUseError
from facialattr.serving.process import check_port_free, pick_free_ports

log = logging.getLogger(__name__)


def _bound_socket(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _hold_socket(host: str, port: int, chosen_with: str) -> socket.socket:
    try:
        return _bound_socket(socket.AF_INET, host, port)
    except OSError as exc:  # checked free a moment ago: another process bound it since
        raise PortInUseError(f"port {port} on {host} was taken while it was being held ({exc.strerror}); "
                             f"pick another with {chosen_with}") from exc


class PortGuard:
    """Placeholder sockets on ``host``'s ports (and ``::1``'s when ``host`` is loopback, as ``localhost``
    may resolve there first); :meth:`close` releases them. Use as a context manager."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._sockets: list[socket.socket] = []

    def hold(self, port: int, *, chosen_with: str) -> int:
        """Hold ``port`` (0: a free one) from now on; returns it.

        Raises :class:`PortInUseError` naming ``chosen_with`` (what sets the port) when any socket,
        of this user or another, is bound there already: a second server must not share it.
        """
        for _attempt in range(5):
            wanted = port or pick_free_ports(self.host, 1)[0]
            try:
                # The check every start makes: anything bound there but a closed connection (TIME_WAIT),
                # a guard or a listening tritonserver of this user included, refuses the port.
                check_port_free(self.host, wanted, chosen_with=chosen_with)
                self._sockets.append(_hold_socket(self.host, wanted, chosen_with))
                break
            except PortInUseError as exc:
                if port:
                    raise
                log.debug("picked port %d was taken meanwhile (%s); picking another", wanted, exc)
        else:
            raise PortInUseError(f"no free port on {self.host} could be held")
        if self.host in ("127.0.0.1", "localhost") and socket.has_ipv6:
            try:
                self._sockets.append(_bound_socket(socket.AF_INET6, "::1", wanted))
            except OSError as exc:  # no IPv6 loopback here, or a process of this user has it: log, go on
                log.warning("not holding [::1]:%d as well (%s): clients should use 127.0.0.1, not localhost",
                            wanted, exc.strerror)
        log.debug("holding port %d on %s for restarts", wanted, self.host)
        return wanted

    @property
    def ports(self) -> list[int]:
        return sorted({s.getsockname()[1] for s in self._sockets})

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> PortGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
