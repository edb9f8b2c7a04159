"""Listening: ``ADDRESS:PORT`` settings, their sockets, URLs, and uvicorn in a service task."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator

import uvicorn

from ucloud.errors import ConfigError, ServerError


def parse_listen(listen: str, key: str) -> tuple[str, int]:
    """``"[::1]:8080"`` -> ("::1", 8080); a ConfigError naming the setting ``key`` otherwise."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError as exc:
        raise ConfigError(key, f"{listen!r} is not ADDRESS:PORT") from exc
    if not sep or not 0 <= number < 65536:
        raise ConfigError(key, f"{listen!r} is not ADDRESS:PORT")
    return host, number


def bind(listen: str, key: str) -> socket.socket:
    """A bound (not yet listening) TCP socket for the setting ``key``."""
    host, port = parse_listen(listen, key)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every answer waits for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(f"{key}: cannot listen on {listen}: {exc}") from exc
    return sock


def url_of(sock: socket.socket, advertised: str = "") -> str:
    """The URL of ``sock``; an unspecified address (``::``) is replaced by ``advertised``."""
    host, port = sock.getsockname()[:2]
    if ipaddress.ip_address(host).is_unspecified:
        host = advertised or ("::1" if ":" in host else "127.0.0.1")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn inside a service task: the supervisor, not uvicorn, owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
