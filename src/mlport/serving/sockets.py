"""The server's listening ports: bound before anything is announced, refused with one clear line when taken."""

from __future__ import annotations

import socket

from mlport.errors import MlportError

__all__ = ["BACKLOG", "PortInUse", "bind", "check_free", "url_host"]

#: How many connections each listening socket queues.
BACKLOG = 2048


class PortInUse(MlportError):
    """A port the server was told to listen on cannot be bound (taken, or not allowed)."""


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _address(host: str, port: int) -> tuple[int, int, int, tuple[object, ...]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    return family, kind, proto, address


def bind(host: str, port: int, what: str, *, listen: bool = True, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (listening when ``listen``).

    With ``reuse_port`` (SO_REUSEPORT) the worker processes of one server listen on the same port and the
    kernel spreads new connections over them.
    """
    family, kind, proto, address = _address(host, port)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen for {what} on {url_host(host)}:{port}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def check_free(host: str, port: int, what: str) -> None:
    """Refuse a port another program listens on (SO_REUSEPORT alone would share it with that program)."""
    bind(host, port, what, listen=False).close()
